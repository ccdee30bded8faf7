"""Snakemake's planning cost: a dry run on images cut into 1k, 10k, 100k deform blocks.

The images are metadata only (Zarr v2 arrays with no chunk written, so a
26 G-voxel pair costs a few bytes); the block size of the measured stage is chosen so
that the high-res level holds the asked number of its blocks, and the other stages use
the defaults. A dry run builds the whole DAG (every job of every stage) and
prints it; the row reports its wall time, CPU time, peak memory (the kernel's peak
resident set of the process, VmHWM, through ``os.wait4``), the number of jobs it planned
and the cost per job. With ``parse_only`` the row times ``snakemake --list-rules`` on the
same config instead: the Snakefile parsed (grids, batches and rules made) without a DAG,
so the DAG's own cost is the difference.

    python benchmarks/dag.py --blocks 100 1000 --stage deform --mode plain [--parse]

prints one row per count (the curve of ``benchmarks/results/*-planning.md``).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BLOCK = 64  # high-res voxels per block edge of the measured stage


def grid_shape(blocks: int) -> tuple[int, int, int]:
    """Blocks along z, y, x whose product is about ``blocks`` (z the shortest axis)."""
    side = round(blocks ** (1 / 3))
    z = max(1, round(side * 0.8))
    y = max(1, round(math.sqrt(blocks / z)))
    return z, y, max(1, round(blocks / (z * y)))


def write_metadata_pair(folder: Path, highres: tuple[int, int, int], lowres_factor: int) -> None:
    """A fixed and a moving Zarr v2 group, each with an empty ``highres`` array and a
    ``lowres`` one ``lowres_factor`` times smaller per axis (no chunk written: reading
    gives the fill value)."""
    import zarr

    lowres = tuple(max(1, n // lowres_factor) for n in highres)
    for role in ("fixed", "moving"):
        group = zarr.open_group(folder / f"{role}.zarr", mode="w", zarr_format=2)
        for name, shape in (("highres", highres), ("lowres", lowres)):
            group.create_array(name, shape=shape, chunks=(128, 128, 128), dtype="uint16")


BATCH = [2, 2, 2]  # blocks per job of the batched row
MODES = {"plain": [1, 1, 1], "grouped": [1, 1, 1], "batched": BATCH, "auto": "auto"}
"""Row kind -> ``blocks_per_job`` of the deform and resample stages."""


def dry_run(
    blocks: int,
    work: Path,
    mode: str = "plain",
    stage: str = "deform",
    parse_only: bool = False,
    lowres_factor: int = 2,
) -> dict:
    """Plan a run with about ``blocks`` blocks of ``stage`` (the row names the exact
    count); wall s, CPU s, peak MiB, jobs planned.

    ``stage`` "deform": deform blocks of ``BLOCK`` voxels, the resample blocks the
    defaults' (64x fewer); "resample": resample blocks of ``BLOCK`` voxels and the
    deformation off, so the resample stage and the output's pyramid are most of the jobs.
    ``mode`` "plain": one block per job; "grouped": the tile rules grouped as
    ``profiles/slurm`` groups them (Snakemake then checks every group against the DAG,
    which costs time of its own); "batched": ``blocks_per_job`` ``BATCH`` for the deform
    and resample stages (8x fewer tile jobs); "auto": ``blocks_per_job: auto`` (the
    default). ``lowres_factor``: the low-res level's size, per axis, as a fraction of the
    high-res one (the key-point and local affine tiles grow with it)."""
    tag = f"{stage}_{mode}" if lowres_factor == 2 else f"{stage}_{mode}_low{lowres_factor}"
    folder = work / f"dag_{blocks}_{tag}"
    grid = grid_shape(blocks)
    shape = tuple(n * BLOCK for n in grid)
    write_metadata_pair(folder, shape, lowres_factor)
    config = {
        role: {
            "path": str(folder / f"{role}.zarr"),
            "lowres": "lowres",
            "highres": "highres",
            "spacing": [1.0, 1.0, 1.0],
        }
        for role in ("fixed", "moving")
    }
    per_job = MODES[mode]
    config |= {"output_dir": str(folder / "results"),
               "deform": {"blocks_per_job": per_job},
               "resample": {"blocks_per_job": per_job}}  # fmt: skip
    if stage == "deform":
        config["deform"]["blocksize"] = [BLOCK] * 3
    else:
        config["deform"]["enabled"] = False
        config["resample"]["blocksize"] = [BLOCK] * 3
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    what = ["--list-rules"] if parse_only else ["--dry-run", "--quiet", "rules"]
    command = [sys.executable, "-m", "snakemake", *what,
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
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", output, re.MULTILINE)) if not parse_only else {}
    jobs = int(counts.pop("total")) if "total" in counts else float("nan")
    name = "dag_parse" if parse_only else "dag_dry_run"
    parts = [stage] * (stage != "deform") + [mode] * (mode != "plain")
    parts += [f"low{lowres_factor}"] * (lowres_factor != 2)
    return {
        "stage": "_".join([name, *parts]),
        "size": f"{math.prod(grid)} blocks", "tool": "bigstream-workflow",
        "voxels": 2 * math.prod(shape), "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "jobs": jobs,
        "ms_per_job": float("nan") if parse_only else round(1000 * wall / jobs, 2),
        "rule_jobs": " ".join(f"{rule}={n}" for rule, n in counts.items() if int(n) > 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--blocks", nargs="+", type=int, required=True, help="block counts")
    parser.add_argument("--stage", choices=("deform", "resample"), default="deform")
    parser.add_argument("--mode", choices=tuple(MODES), default="plain")
    parser.add_argument("--parse", action="store_true", help="time --list-rules as well")
    parser.add_argument("--lowres-factor", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "work")
    args = parser.parse_args()
    for blocks in args.blocks:
        for parse_only in (True, False) if args.parse else (False,):
            row = dry_run(blocks, args.work, args.mode, args.stage, parse_only, args.lowres_factor)
            print("\t".join(str(value) for value in row.values()), flush=True)


if __name__ == "__main__":
    main()
