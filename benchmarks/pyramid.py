#!/usr/bin/env python3
"""The output's pyramid, job by job: peak memory and time of every ``downsample_aligned``
job at each size, each job in its own process as Snakemake runs it.

    .venv/bin/python benchmarks/pyramid.py [--sizes S 8S 64S] [--channels 2]

For each size (a phantom preset's fixed high-res shape, ``bigstream_core.phantom.preset``)
an ``aligned.ome.zarr`` is created as ``create_aligned_store`` makes it (default
``resample.blocksize`` and chunks, ``--channels`` channels, every level empty) and its
level 0 filled block by block with a smooth texture (the pyramid's cost does not depend on
the content but through compression; the texture compresses like tissue, not like noise).
Then every block of every level is made by a separate process calling what the rule's
script calls (``bigstream_core.io.downsample_level`` on the block), and its peak resident
memory (its ``VmHWM``) and wall time recorded. A per-block job's memory must
not grow with the image: the table's ``peak_mb_max`` per size is the claim to check.

Prints the table and writes it to ``benchmarks/results/pyramid.tsv`` (with the machine's
date); the stores go to ``benchmarks/results/work/pyramid`` and are removed after.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from bigstream_core.io import create_ome_zarr, pyramid_shapes
from bigstream_core.phantom import preset
from bigstream_core.tiling import block_chunks, tile_grid

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BLOCKSIZE = (256, 256, 256)  # config/config.yaml's resample.blocksize
JOB = (
    "import sys; from bigstream_core.io import downsample_level; "
    "downsample_level(sys.argv[1], int(sys.argv[2]), eval(sys.argv[3])); "
    "print(next(line for line in open('/proc/self/status') if line.startswith('VmHWM')))"
)
"""A pyramid job: what the rule's script calls, then the process's own peak resident memory
(``VmHWM``: a forked child's ``ru_maxrss`` would count the parent's memory too)."""


def texture(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A uint16 block of smooth texture at two scales (tissue-like, compressible)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(shape).astype(np.float32)
    coarse = ndimage.gaussian_filter(noise, 4.0) * 60
    fine = ndimage.gaussian_filter(noise, 1.0) * 8
    return np.clip(2000 + 800 * coarse + 400 * fine, 0, 65535).astype(np.uint16)


def fill_level0(path: Path, shape: tuple[int, int, int], channels: int) -> None:
    """Level 0 of the store, one resample block at a time, as the resample jobs write it."""
    level = create_ome_zarr(path, shape, np.uint16, block_chunks(BLOCKSIZE),
                            channels=channels)["0"]  # fmt: skip
    for number, tile in enumerate(tile_grid(shape, BLOCKSIZE)):
        block = texture(tuple(b - a for a, b in tile.core), number)
        layers = [block // channels * (c + 1) for c in range(channels)]  # no overflow
        level[(slice(None), *tile.slices("core"))] = np.stack(layers)


def run_job(path: Path, level: int, core) -> tuple[float, float]:
    """One pyramid block in its own process: (wall seconds, peak resident MB)."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", JOB, str(path), str(level), repr(core)],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return time.monotonic() - start, int(done.stdout.split()[-2]) / 1024  # "VmHWM: N kB"


def benchmark(size: str, channels: int, work: Path) -> list[dict]:
    shape = preset(size).fixed_shape
    path = work / f"{size}.ome.zarr"
    fill_level0(path, shape, channels)
    rows = []
    shapes = pyramid_shapes(shape)
    for level in range(1, len(shapes)):
        for tile in tile_grid(shapes[level], BLOCKSIZE):
            seconds, peak = run_job(path, level, tile.core)
            read = 8 * tile.halo_voxels * channels  # source voxels (2x per axis), all channels
            rows.append({"size": size, "level": level, "block": tile.id, "seconds": seconds,
                         "peak_mb": peak, "voxels_per_s": read / seconds})  # fmt: skip
    shutil.rmtree(path)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["S", "8S"])
    parser.add_argument("--channels", type=int, default=2)
    args = parser.parse_args()
    work = RESULTS / "work" / "pyramid"
    work.mkdir(parents=True, exist_ok=True)
    jobs = pd.DataFrame([row for size in args.sizes
                         for row in benchmark(size, args.channels, work)])  # fmt: skip
    table = jobs.groupby("size", sort=False).agg(
        jobs=("block", "size"), levels=("level", "max"), seconds_sum=("seconds", "sum"),
        seconds_max=("seconds", "max"), peak_mb_max=("peak_mb", "max"),
        voxels_per_s=("voxels_per_s", "median"),
    ).round(2)  # fmt: skip
    table["shape"] = [str(preset(size).fixed_shape) for size in table.index]
    print(table.to_string())
    out = RESULTS / "pyramid.tsv"
    table.assign(date=time.strftime("%Y-%m-%d"), channels=args.channels).to_csv(out, sep="\t")
    jobs.round(3).to_csv(RESULTS / "pyramid_jobs.tsv", sep="\t", index=False)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
