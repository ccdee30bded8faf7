#!/usr/bin/env python3
"""Benchmarks: wall time, peak memory per job, voxels/s and accuracy of each stage.

    python benchmarks/run.py [--quick] [--sizes S 2S ...]

Sizes are phantom presets (``bigstream_core.phantom.preset``) used as the level
a stage works on: ``S`` is 150 x 250 x 450 voxels (a typical low-res level),
``2S`` eight times that. ``--quick`` runs ``tiny`` and ``small`` only (about a
minute). Stages measured so far:

- ``phantom``: rendering and writing both volumes of the pair (N5);
- ``read``: reading the fixed volume once, block by block (the I/O floor);
- ``global_affine``: the workflow's global affine stage through real Snakemake
  (per-tile key points, matching, RANSAC), peak memory = the largest
  ``max_rss`` of its jobs (Snakemake ``benchmark:`` files), accuracy = mean TRE
  over the fixed foreground against the known transform;
- ``global_affine_api``: the same stage in one process with
  ``bigstream_core.api.ransac_affine`` (what a notebook user runs).

Every step runs in its own process; its peak memory comes from the kernel
(``os.wait4``). The table is printed and written to
``benchmarks/results/latest.tsv`` and ``latest.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
WORK = RESULTS / "work"

# Key point parameters for the phantom's cells (radii 2-10 voxels).
GLOBAL_AFFINE = {"min_radius": 2, "max_radius": 10, "cc_radius": 12, "nspots": 5000,
                 "match_threshold": 0.7, "blocksize": [128, 128, 128]}  # fmt: skip

WRITE = """
from bigstream_core.io import write_n5
from bigstream_core.phantom import make_pair, preset
fixed, moving, truth = make_pair(preset({size!r}))
for name, data in (("fixed", fixed), ("moving", moving)):
    write_n5(data, {out!r} + f"/{{name}}.n5", "level", preset({size!r}).spacing)
truth.to_json({out!r} + "/truth.json")
"""
READ = """
import dask
from bigstream_core.io import open_image
with dask.config.set(scheduler="threads"):
    open_image({out!r} + "/fixed.n5", "level").to_dask().sum().compute()
"""
API = """
import json, time
from bigstream_core.accuracy import evaluate
from bigstream_core.api import ransac_affine
from bigstream_core.io import open_image
from bigstream_core.phantom import GroundTruth
from bigstream_core.transforms import affine_map
fixed, moving = (open_image({out!r} + f"/{{n}}.n5", "level") for n in ("fixed", "moving"))
params = {params!r}
params.pop("blocksize")
affine, report = ransac_affine(fixed, moving, None, None, **params, return_report=True)
report["tre"] = evaluate(affine_map(affine), GroundTruth.from_json({out!r} + "/truth.json"),
                         fixed, moving)
json.dump(report, open({out!r} + "/api_report.json", "w"), default=float)
"""


def measure(command: list[str]) -> tuple[float, float, float]:
    """Run ``command``; return wall s, CPU s (it and its children) and its own peak RSS MiB."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"benchmark step failed: {' '.join(command)}")
    wall = time.perf_counter() - start
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def row(stage, size, voxels, wall, cpu, rss, **extra) -> dict:
    return {"stage": stage, "size": size, "tool": "bigstream-workflow", "voxels": voxels,
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(rss, 1),
            "voxels_per_s": round(voxels / wall), **extra}  # fmt: skip


def workflow_global_affine(out: Path, size: str, voxels: int) -> dict:
    """The global affine stage through real Snakemake; peak memory from its jobs' benchmarks."""
    work = out / "workflow"
    config = {
        "fixed": {"path": str(out / "fixed.n5"), "lowres": "level", "highres": "level"},
        "moving": {"path": str(out / "moving.n5"), "lowres": "level", "highres": "level"},
        "output_dir": str(work / "results"), "ground_truth": str(out / "truth.json"),
        "global_affine": GLOBAL_AFFINE,
    }  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    results = work / "results"
    targets = [str(results / "global" / "report.json"), str(results / "qc" / "accuracy.json")]
    command = [sys.executable, "-m", "snakemake", *targets, "--snakefile",
               str(ROOT / "workflow" / "Snakefile"), "--directory", str(work), "--profile",
               str(ROOT / "profiles" / "local"), "--cores", "2", "--forceall", "--quiet",
               "--configfile", str(work / "config.yaml")]  # fmt: skip
    wall, _, _ = measure(command)
    jobs = pd.concat(
        [pd.read_csv(path, sep="\t") for path in (results / "benchmarks").rglob("*.tsv")]
    )
    report = json.loads((results / "global" / "report.json").read_text())
    tre = json.loads((results / "qc" / "accuracy.json").read_text())["mean_um"]
    points = report["fixed_points"] + report["moving_points"]
    return row("global_affine", size, voxels, wall, jobs["cpu_time"].sum(), jobs["max_rss"].max(),
               accuracy=f"TRE {tre:.3f} um", points_per_s=round(points / wall),
               matches_per_s=round(report["matches"] / wall), jobs=len(jobs))  # fmt: skip


def run(sizes: list[str]) -> pd.DataFrame:
    from bigstream_core.phantom import preset

    rows = []
    for size in sizes:
        spec = preset(size)
        voxels = math.prod(spec.fixed_shape) + math.prod(spec.moving_shape)
        out = WORK / size
        out.mkdir(parents=True, exist_ok=True)
        rows.append(
            row("phantom", size, voxels, *measure(python(WRITE.format(size=size, out=str(out)))))
        )
        fixed_voxels = math.prod(spec.fixed_shape)
        rows.append(row("read", size, fixed_voxels, *measure(python(READ.format(out=str(out))))))
        rows.append(workflow_global_affine(out, size, voxels))
        api = measure(python(API.format(out=str(out), params=dict(GLOBAL_AFFINE))))
        report = json.loads((out / "api_report.json").read_text())
        points = report["fixed_points"] + report["moving_points"]
        rows.append(row("global_affine_api", size, voxels, *api,
                        accuracy=f"TRE {report['tre']['mean_um']:.3f} um",
                        points_per_s=round(points / api[0]),
                        matches_per_s=round(report["matches"] / api[0])))  # fmt: skip
        print(pd.DataFrame(rows).to_string(index=False), flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny and small only (a minute)")
    parser.add_argument("--sizes", nargs="+", help="phantom presets to run (default: S 2S)")
    args = parser.parse_args()
    sizes = args.sizes or (["small"] if args.quick else ["S", "2S"])
    table = run(sizes)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / "latest.tsv", sep="\t", index=False)
    (RESULTS / "latest.md").write_text(table.to_markdown(index=False) + "\n")
    print(f"\n{table.to_markdown(index=False)}\n\nwritten: {RESULTS / 'latest.tsv'}, latest.md")


if __name__ == "__main__":
    main()
