#!/usr/bin/env python3
"""Benchmarks: wall time, peak memory per job and voxels/s of each stage that exists.

    python benchmarks/run.py [--quick] [--sizes tiny small S 2S ...]

Every measured step runs as its own process (the way a Snakemake job runs), and
its peak resident memory is read from the kernel's accounting of that process
(``os.wait4``). Results are printed and written to ``benchmarks/results/latest.tsv``
and ``latest.md``. Stages measured so far:

- ``phantom``: writing a synthetic pair (both images, N5 high+low res and OME-Zarr);
- ``read_n5``: reading the fixed high-res N5 once, block by block (the I/O floor).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
WORK = RESULTS / "work"

JOBS = {
    "phantom": (
        "from bigstream_core.phantom import preset, write_pair\n"
        "write_pair({out!r}, preset({size!r}))\n"
    ),
    "read_n5": (
        "from bigstream_core.io import open_image\n"
        "import dask\n"
        "image = open_image({out!r} + '/fixed.n5', 'highres')\n"
        "with dask.config.set(scheduler='threads'):\n"
        "    image.to_dask().sum().compute()\n"
    ),
}


def measure(code: str) -> tuple[float, float, float]:
    """Run ``code`` in a fresh Python; return wall s, CPU s and peak RSS MiB of that process."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code])
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"benchmark job failed:\n{code}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run(sizes: list[str]) -> pd.DataFrame:
    from bigstream_core.phantom import preset

    rows = []
    for size in sizes:
        spec = preset(size)
        voxels = math.prod(spec.fixed_shape) + math.prod(spec.moving_shape)
        out = str(WORK / size)
        for stage, template in JOBS.items():
            stage_voxels = voxels if stage == "phantom" else math.prod(spec.fixed_shape)
            wall, cpu, rss = measure(template.format(out=out, size=size))
            rows.append(
                {
                    "stage": stage,
                    "size": size,
                    "tool": "bigstream-workflow",
                    "voxels": stage_voxels,
                    "wall_s": round(wall, 2),
                    "cpu_s": round(cpu, 2),
                    "peak_rss_mb": round(rss, 1),
                    "voxels_per_s": round(stage_voxels / wall),
                    "accuracy": "",
                }
            )
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes only (a minute)")
    parser.add_argument("--sizes", nargs="+", help="phantom presets to run (default S 2S)")
    args = parser.parse_args()
    sizes = args.sizes or (["tiny", "small"] if args.quick else ["S", "2S"])
    table = run(sizes)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / "latest.tsv", sep="\t", index=False)
    (RESULTS / "latest.md").write_text(table.to_markdown(index=False) + "\n")
    print(f"\nwritten: {RESULTS / 'latest.tsv'} and {RESULTS / 'latest.md'}")


if __name__ == "__main__":
    main()
