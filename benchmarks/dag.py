"""Snakemake's planning cost: a dry run on images cut into 1k, 10k, 100k deform blocks.

The images are metadata only (Zarr v2 arrays with no chunk written, so a
26 G-voxel pair costs a few bytes); the deform block size is chosen so that
the high-res level holds the asked number of blocks, and the other stages use
the defaults. A dry run builds the whole DAG (every job of every stage) and
prints it; the row reports its wall time, peak memory, and the number of jobs
it planned, so the cost per job can be read off.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BLOCK = 64  # high-res voxels per deform block edge


def grid_shape(blocks: int) -> tuple[int, int, int]:
    """Blocks along z, y, x whose product is about ``blocks`` (z the shortest axis)."""
    side = round(blocks ** (1 / 3))
    z = max(1, round(side * 0.8))
    y = max(1, round(math.sqrt(blocks / z)))
    return z, y, max(1, round(blocks / (z * y)))


def write_metadata_pair(folder: Path, highres: tuple[int, int, int]) -> None:
    """A fixed and a moving Zarr v2 group, each with an empty ``highres`` array and a
    ``lowres`` one of half the size (no chunk written: reading gives the fill value)."""
    import zarr

    for role in ("fixed", "moving"):
        group = zarr.open_group(folder / f"{role}.zarr", mode="w", zarr_format=2)
        for name, shape in (("highres", highres), ("lowres", tuple(n // 2 for n in highres))):
            group.create_array(name, shape=shape, chunks=(128, 128, 128), dtype="uint16")


BATCH = [2, 2, 2]  # blocks per job of the batched row


def dry_run(blocks: int, work: Path, mode: str = "plain") -> dict:
    """Plan a run with about ``blocks`` deform blocks (the row names the exact count);
    wall s, peak MiB, jobs planned. ``mode`` "grouped": the tile rules are grouped as
    ``profiles/slurm`` groups them (Snakemake then checks every group against the DAG,
    which costs time of its own); "batched": ``blocks_per_job`` ``BATCH`` for the deform
    and resample stages (8x fewer tile jobs)."""
    folder = work / f"dag_{blocks}_{mode}"
    grid = grid_shape(blocks)
    shape = tuple(n * BLOCK for n in grid)
    write_metadata_pair(folder, shape)
    config = {
        role: {
            "path": str(folder / f"{role}.zarr"),
            "lowres": "lowres",
            "highres": "highres",
            "spacing": [1.0, 1.0, 1.0],
        }
        for role in ("fixed", "moving")
    }
    per_job = BATCH if mode == "batched" else [1, 1, 1]
    config |= {"output_dir": str(folder / "results"),
               "deform": {"blocksize": [BLOCK] * 3, "blocks_per_job": per_job},
               "resample": {"blocks_per_job": per_job}}  # fmt: skip
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "--dry-run", "--quiet", "rules",
               "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(folder),
               "--profile", str(ROOT / "profiles" / "local"), "--cores", "2",
               "--configfile", str(folder / "config.yaml")]  # fmt: skip
    if mode == "grouped":
        profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "profile.yaml").read_text())
        command += ["--groups", *profile["groups"]]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"dry run of {blocks} blocks failed:\n{output[-3000:]}")
    jobs = re.search(r"^total\s+(\d+)", output, re.MULTILINE)
    return {
        "stage": "dag_dry_run" if mode == "plain" else f"dag_dry_run_{mode}",
        "size": f"{math.prod(grid)} blocks", "tool": "bigstream-workflow",
        "voxels": 2 * math.prod(shape), "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "jobs": int(jobs.group(1)) if jobs else float("nan"),
        "ms_per_job": round(1000 * wall / int(jobs.group(1)), 2) if jobs else float("nan"),
    }  # fmt: skip
