#!/usr/bin/env python3
"""Benchmarks: wall time, peak memory per job, voxels/s and accuracy of each stage.

    python benchmarks/run.py [--quick] [--with-bigstream] [--sizes S 2S 4S 8S]
                             [--bigstream-sizes S] [--dag 1000 10000 ...]

Sizes are phantom presets (``bigstream_core.phantom.preset``), with a smooth
deformation of up to 4 µm on top of the affine, written as N5 with a
``highres`` level of the preset's size and a ``lowres`` level (2x2x2 means),
as the bigstream tutorial's data: ``S`` is 150 x 250 x 450 high-res voxels,
``2S``, ``4S``, ``8S`` two, four, eight times its voxels (8S, 300 x 500 x 900, is the
size of the tutorial's high-res level); the default runs all four (~30 min here). The
affine stages work on the low-res level, deform and resample on the high-res
one. ``--quick`` runs ``small`` only (a few minutes). Stages:

- ``phantom``: rendering and writing both volumes of the pair (N5, two levels);
- ``read``: reading the fixed high-res volume once, block by block (the I/O floor);
- ``global_affine`` (key points, matching, RANSAC), ``global_refine`` (its intensity
  refinement; its row gives its time over ``global_affine``'s), ``local_affine``,
  ``deform``, ``stitch_field``, ``invert_field`` (when asked for), ``resample`` (level 0 of
  the output), ``pyramid`` (its other levels, one job per block of each, and the
  metadata), ``lowres_outputs`` (the low-res images after the affine stages) and
  ``qc_accuracy`` (TRE and NCC per stage, against the known transform): the
  workflow's stages through one real Snakemake run (``--cores 2``) with the
  default config but for the key point and matching parameters (the phantom's cells are
  small) and ``deform.mask_threshold``; per stage the
  sum of its jobs' times, the largest ``max_rss`` of its jobs and the longest job (Snakemake
  ``benchmark:`` files); ``voxels`` is the level the stage works on;
  accuracy = mean TRE over the fixed foreground against the known transform
  and NCC over the foreground; ``whole_workflow`` is the run's wall time (DAG,
  job start-up and all), ``whole_workflow_no_truth`` (largest size only, not --quick) that of a
  second run without ``ground_truth`` (what a user's run does: no accuracy job);
  ``qc_report`` the job that draws the QC pictures and the metrics table;
- ``deform_same_block``, ``resample_same_block``: one deform block (96 x 160 x 224 halo) and
  one resample block (64 x 128 x 256) of the same shape in the middle of every size's pair,
  computed as their jobs do, each in its own process (``benchmarks/same_block.py``): the
  workflow rows' largest job is not the same block at every size (at S no block has its
  whole halo inside the image), these are, so their memory shows what the image's size
  alone does to a job;
- ``job_startup``: a process importing what a deform job imports (paid by every job);
- ``write``: writing the fixed high-res volume once into a new Zarr (with ``read``, the
  I/O floor);
- ``profile_deform_block`` (largest size): the middle deform block under cProfile, its top
  functions in ``latest_profile.md``, with this machine's floors for that block:
  ``floor_gaussian_pass`` and ``floor_map_coordinates_pass`` (one pass of the deform's two
  kernels over the block, float32) (``benchmarks/profile_stage.py``);
- ``global_affine_api``: the global affine in one process with
  ``bigstream_core.api.ransac_affine`` (what a notebook user runs);
- ``global_refine_api``: ``bigstream_core.api.affine_refine`` of that affine in its own
  process, with the TRE before and after (the pair's deformation is in the TRE too);
- ``global_affine_api_round``, ``global_refine_api_round`` (smallest size only): the same
  two on a pair of that size without deformation whose moving image shows another imaging
  round (``phantom.another_round``: gamma 0.8, a ±25 % illumination gradient, 1.5x the
  noise), so the TRE is the affine's alone;
- ``dag_dry_run`` (``_grouped``: with the cluster profiles' groups; ``_batched``: with
  ``blocks_per_job`` 2x2x2 for deform and resample; ``_auto``, from 10k blocks on: with
  ``blocks_per_job: auto``; the others set ``[1, 1, 1]``, one block per job): Snakemake
  planning a run of 1 (the fixed start-up cost), 1k and 10k deform blocks
  (``--dag``, e.g. ``--dag 1000 10000 100000``; metadata-only images, see
  ``benchmarks/dag.py``, which also runs alone for other curves): wall time, CPU time,
  peak memory, jobs planned (in all and per tile rule), ms per job.

``--with-bigstream`` adds the published bigstream 5.0.3 on the same pairs
(``--bigstream-sizes``, default the smallest size run): its RANSAC affine, its piecewise
RANSAC (local affines) and its piecewise deformation with a local dask cluster, each timed
and checked against the known transform like ours, in its own virtual environment
(``benchmarks/bigstream_side.py``); ``latest_bigstream.md`` has the ratios ours/theirs.

Every step runs in its own process; its peak memory comes from the kernel
(``os.wait4``: the largest process, children included). The table is printed and written
to ``benchmarks/results/latest.tsv`` and ``latest.md``; ``latest_scaling.md`` gives, per
stage, the largest job's memory and the time per voxel at each size relative to the
smallest (flat memory, time no worse than linear); a last table, per tile rule, compares
the memory each job asked the scheduler for with its measured peak
(``benchmarks/memory.py``; ``latest_memory.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bigstream_side  # noqa: E402
from dag import dry_run  # noqa: E402
from memory import memory_table  # noqa: E402

from bigstream_workflow.layout import stage_costs  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
WORK = RESULTS / "work"

# Key point parameters for the phantom's cells on the low-res level (radii 1-5 voxels).
KEYPOINTS = {"min_radius": 1.5, "max_radius": 5, "match_threshold": 0.7}
GLOBAL_AFFINE = {**KEYPOINTS, "cc_radius": 8, "nspots": 5000}  # key-point tiles: auto
LOCAL_AFFINE = {"match_threshold": 0.7, "cc_radius": 6, "blocksize": [64, 128, 128],
                "overlap": 0.25, "min_matches": 12}  # fmt: skip
# High-res blocks of 128 x 256 x 256 voxels: a whole block fits even the smallest size's
# 150 x 250 x 450 image (the defaults' 256^3 would be cut to 150 x 250 x 256 there and grow
# with the image up to 4S), so a job's memory can be compared across sizes.
HIGHRES_BLOCK = [128, 256, 256]
DEFORM = {"mask_threshold": 150, "blocksize": HIGHRES_BLOCK}  # background: 100 +- 10 counts
RESAMPLE = {"blocksize": HIGHRES_BLOCK}
DEFORM_UM = 4.0

WRITE = """
import dataclasses
from bigstream_core.phantom import preset, write_pair
spec = dataclasses.replace(preset({size!r}), deform_amplitude_um={deform!r})
write_pair({out!r}, spec, ome_zarr=False)
"""
# The bigstream tutorial's key-point parameters on a dense pair that looks like the real data
# they were used on (cells of radii 4-10 low-res voxels edge to edge; phantom.dense): the
# searched radii set the cost of both tools. Run at 8S and up, the size of a real low-res
# level: at S the fixed level has ~90 blobs of those radii, too few for bigstream's safeguard.
TUTORIAL_SIZES = ("8S", "64S", "512S")
TUTORIAL_KEYPOINTS = {"min_radius": 6, "max_radius": 20, "cc_radius": 12, "nspots": 5000,
                      "match_threshold": 0.75}  # fmt: skip
WRITE_TUTORIAL = """
from bigstream_core.phantom import dense, preset, write_pair
write_pair({out!r}, dense(preset({size!r})), ome_zarr=False)
"""
WRITE_ROUND = """
from bigstream_core.phantom import another_round, preset, write_pair
write_pair({out!r}, another_round(preset({size!r})), ome_zarr=False)
"""
READ = """
import dask
from bigstream_core.io import open_image
with dask.config.set(scheduler="threads"):
    open_image({out!r} + "/fixed.n5", "highres").to_dask().sum().compute()
"""
WRITE_ONCE = """
import dask, shutil
from bigstream_core.io import open_image
with dask.config.set(scheduler="threads"):
    open_image({out!r} + "/fixed.n5", "highres").to_dask().to_zarr({out!r} + "/write_once.zarr",
                                                                   overwrite=True)
shutil.rmtree({out!r} + "/write_once.zarr")
"""
STARTUP = """
from bigstream_core import atomic
from bigstream_workflow.config import open_config_images
from bigstream_core.deform import DeformParams, register_tile
from bigstream_workflow.transform_files import from_inputs
from bigstream_workflow.logs import configure
"""
API = """
import json, time
import numpy as np
from bigstream_core.accuracy import evaluate
from bigstream_core.api import ransac_affine
from bigstream_core.io import open_image
from bigstream_core.phantom import GroundTruth
from bigstream_core.transforms import affine_map
fixed, moving = (open_image({out!r} + f"/{{n}}.n5", "lowres") for n in ("fixed", "moving"))
params = {params!r}
affine, report = ransac_affine(fixed, moving, None, None, **params, return_report=True)
report["tre"] = evaluate(affine_map(affine), GroundTruth.from_json({out!r} + "/truth.json"),
                         fixed, moving)
json.dump(report, open({out!r} + "/api_report.json", "w"), default=float)
np.savetxt({out!r} + "/api_affine.txt", affine)
"""
REFINE = """
import json
import numpy as np
from bigstream_core.accuracy import evaluate
from bigstream_core.api import affine_refine
from bigstream_core.io import open_image
from bigstream_core.phantom import GroundTruth
from bigstream_core.transforms import affine_map
fixed, moving = (open_image({out!r} + f"/{{n}}.n5", "lowres") for n in ("fixed", "moving"))
start = np.loadtxt({out!r} + "/api_affine.txt")
affine, report = affine_refine(fixed, moving, None, None, start, return_report=True)
truth = GroundTruth.from_json({out!r} + "/truth.json")
report["tre"] = [evaluate(affine_map(a), truth, fixed, moving)["mean_um"] for a in (start, affine)]
json.dump(report, open({out!r} + "/refine_report.json", "w"), default=float)
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


def row_of(stage, size, voxels, wall, cpu, rss, **extra) -> dict:
    return {"stage": stage, "size": size, "tool": "bigstream-workflow", "voxels": voxels,
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(rss, 1),
            "voxels_per_s": round(voxels / wall), **extra}  # fmt: skip


LOWRES_STAGES = ("masks", "global_affine", "global_refine", "local_affine", "lowres_outputs",
                 "qc_accuracy", "qc_report")  # fmt: skip
ACCURACY_LABELS = {
    "global_refine": "global affine",
    "local_affine": "global affine + local affines",
    "deform": "global affine + local affines + deformation",
}


def run_workflow(work: Path, config: dict, *targets: str) -> tuple[float, float]:
    """One real Snakemake run of ``config`` (into a fresh ``output_dir``) on 2 cores, of
    everything or of ``targets``: wall s and CPU s of the whole run."""
    shutil.rmtree(config["output_dir"], ignore_errors=True)  # no job files of an earlier run
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", *targets, "--snakefile",
               str(ROOT / "workflow" / "Snakefile"), "--directory", str(work), "--profile",
               str(ROOT / "profiles" / "local"), "--cores", "2", "--forceall", "--quiet",
               "--configfile", str(work / "config.yaml")]  # fmt: skip
    wall, cpu, _ = measure(command)
    return wall, cpu


def workflow_config(out: Path, results: Path, global_affine: dict = GLOBAL_AFFINE) -> dict:
    """The benchmark's config for the pair in ``out`` (with its ground truth), into
    ``results``; ``global_affine``: the global stage's key-point parameters."""
    return {
        "fixed": {"path": str(out / "fixed.n5")}, "moving": {"path": str(out / "moving.n5")},
        "output_dir": str(results), "ground_truth": str(out / "truth.json"),
        "global_affine": global_affine, "local_affine": LOCAL_AFFINE, "deform": DEFORM,
        "resample": RESAMPLE,
    }  # fmt: skip


def workflow_stages(out: Path, size: str, voxels: dict[str, int], user_run: bool) -> list[dict]:
    """The workflow's stages through real Snakemake, one row per stage.

      ``wall_s`` sums the stage's job times (what a one-core machine would take),
      ``peak_rss_mb`` is the largest ``max_rss`` of its jobs, both from the
      jobs' Snakemake benchmark files; a row times the whole run, and with ``user_run``
    a last one a second run without the known transform (no QC job), as a user runs it.
    """
    work = out / "workflow"
    results = work / "results"
    config = workflow_config(out, results)
    wall, cpu = run_workflow(work, config)
    accuracy = json.loads((results / "qc" / "accuracy.json").read_text())["stages"]
    tre = {row["transform"]: row for row in accuracy}
    rows = []
    costs = stage_costs(results)
    for stage, jobs in costs.items():  # the stages the run asked for
        extra = {"jobs": jobs["jobs"], "max_job_s": round(jobs["max_job_s"], 2)}
        if stage in ACCURACY_LABELS:
            row = tre[ACCURACY_LABELS[stage]]
            extra["accuracy"] = f"TRE {row['mean_um']:.3f} um, NCC {row['ncc_fg']:.3f}"
            extra["tre_um"] = row["mean_um"]
        if stage == "global_refine":
            share = jobs["s"] / costs["global_affine"]["s"]
            extra["accuracy"] += f", {share:.2f}x the time of global_affine"
        level = voxels["lowres" if stage in LOWRES_STAGES else "highres"]
        rows.append(row_of(stage, size, level, jobs["s"], jobs["cpu_s"], jobs["peak_mb"],
                           **extra))  # fmt: skip
    rows.append(
        row_of(
            "whole_workflow",
            size,
            voxels["highres"],
            wall,
            cpu,
            float("nan"),
            accuracy=f"TRE before {tre['none (before registration)']['mean_um']:.2f} um",
        )
    )
    if user_run:  # the registration alone, as a user runs it (no known transform: no QC job)
        chain = {**config, "ground_truth": None, "output_dir": str(results) + "_chain"}
        rows.append(row_of("whole_workflow_no_truth", size, voxels["highres"],
                           *run_workflow(work, chain), float("nan")))  # fmt: skip
    return rows


def global_stage_row(out: Path, size: str, voxels: int, keypoints: dict, suffix: str = ""):
    """Our global stage as a user's run makes it: Snakemake from nothing to the refined
    ``global/affine.txt`` (plan, key points, matching, RANSAC, refinement; the DAG and every
    job's start-up included) on 2 cores, with ``keypoints`` for ``global_affine``; the TRE
    of that affine over the fixed foreground (the pair's deformation is in it too)."""
    from bigstream_core.accuracy import evaluate
    from bigstream_core.io import open_image
    from bigstream_core.phantom import GroundTruth
    from bigstream_core.transforms import affine_map, read_affine

    work = out / f"global_stage{suffix}"
    results = work / "results"
    config = {"fixed": {"path": str(out / "fixed.n5")}, "moving": {"path": str(out / "moving.n5")},
              "output_dir": str(results), "global_affine": keypoints}  # fmt: skip
    wall, cpu = run_workflow(work, config, str(results / "global" / "affine.txt"))
    images = [open_image(out / f"{role}.n5", "lowres") for role in ("fixed", "moving")]
    truth = GroundTruth.from_json(out / "truth.json")
    affine = read_affine(results / "global" / "affine.txt")
    tre = evaluate(affine_map(affine), truth, *images)["mean_um"]
    peak = max(jobs["peak_mb"] for jobs in stage_costs(results).values())
    note = f"TRE {tre:.3f} um; the run's wall time, its largest job's memory"
    return row_of(f"global_stage{suffix}", size, voxels, wall, cpu, peak, tre_um=tre, accuracy=note)


def profile_rows(out: Path, size: str) -> list[dict]:
    """The middle deform block under cProfile, and the floors of its kernels on this machine."""
    wall, cpu, rss = measure([sys.executable, str(HERE / "profile_stage.py"), str(out),
                              json.dumps(DEFORM)])  # fmt: skip
    report = json.loads((out / "profile.json").read_text())
    halo = report["halo_voxels"]
    rows = [row_of("profile_deform_block", size, halo, report["block_s"], cpu, rss,
                   accuracy=f"block {report['block']}, process {wall:.1f} s")]  # fmt: skip
    for floor in ("read", "gaussian_pass", "map_coordinates_pass"):
        seconds = report[f"{floor}_s"]
        rows.append(row_of(f"floor_{floor}", size, halo, seconds, seconds, float("nan")))
    return rows


def same_block_rows(out: Path, size: str) -> list[dict]:
    """One deform and one resample block of the same shape at every size
    (``benchmarks/same_block.py``): per-job memory against the image's size alone."""
    rows = []
    for stage in ("deform", "resample"):
        wall, cpu, rss = measure([sys.executable, str(HERE / "same_block.py"), str(out), stage])
        block = json.loads((out / f"same_block_{stage}.json").read_text())
        voxels = math.prod(int(n) for n in block["block"].split("x"))
        rows.append(row_of(f"{stage}_same_block", size, voxels, wall, cpu, rss,
                           accuracy=f"block {block['block']}, moving window {block['window']}, "
                                    f"masked {block['masked_share']:.2f}"))  # fmt: skip
    return rows


def scaling(table: pd.DataFrame) -> pd.DataFrame:
    """Per stage of ours: the largest job's memory and seconds per voxel at each size,
    relative to the smallest size (memory flat and time linear: both stay near 1)."""
    ours = table[(table["tool"] == "bigstream-workflow") & table["peak_rss_mb"].notna()
                 & ~table["stage"].str.startswith("dag_")]  # fmt: skip
    rows = []
    for stage, group in ours.groupby("stage", sort=False):
        if len(group) < 2:
            continue
        first = group.iloc[0]
        for _, row in group.iterrows():
            per_voxel = (row["wall_s"] / row["voxels"]) / (first["wall_s"] / first["voxels"])
            rows.append({"stage": stage, "size": row["size"], "voxels": row["voxels"],
                         "peak_rss_mb": row["peak_rss_mb"],
                         "memory / smallest": round(row["peak_rss_mb"] / first["peak_rss_mb"], 2),
                         "s per voxel / smallest": round(per_voxel, 2)})  # fmt: skip
    return pd.DataFrame(rows)


def api_rows(out: Path, size: str, voxels: int, suffix: str = "") -> list[dict]:
    """The global affine (``global_affine_api``) and its refinement (``global_refine_api``)
    through the Python API, each in its own process, on the pair in ``out``."""
    api = measure(python(API.format(out=str(out), params=dict(GLOBAL_AFFINE))))
    report = json.loads((out / "api_report.json").read_text())
    points = report["fixed_points"] + report["moving_points"]
    rows = [row_of(f"global_affine_api{suffix}", size, voxels, *api,
                   accuracy=f"TRE {report['tre']['mean_um']:.3f} um",
                   tre_um=report["tre"]["mean_um"], points_per_s=round(points / api[0]),
                   matches_per_s=round(report["matches"] / api[0]))]  # fmt: skip
    refine = measure(python(REFINE.format(out=str(out))))
    report = json.loads((out / "refine_report.json").read_text())
    before, after = report["tre"]
    outcome = f"TRE {before:.3f} -> {after:.3f} um, {report['status']}"
    rows.append(row_of(f"global_refine_api{suffix}", size, voxels, *refine, accuracy=outcome,
                       tre_um=after))  # fmt: skip
    return rows


def run(sizes: list[str], bigstream_sizes: list[str]) -> pd.DataFrame:
    from bigstream_core.phantom import preset

    rows = [row_of("job_startup", "-", 1, *measure(python(STARTUP)))]
    for size in sizes:
        spec = preset(size)
        high = math.prod(spec.fixed_shape) + math.prod(spec.moving_shape)
        voxels = {"highres": high, "lowres": high // 8}  # both images
        out = WORK / size
        out.mkdir(parents=True, exist_ok=True)
        write = WRITE.format(size=size, out=str(out), deform=DEFORM_UM)
        rows.append(row_of("phantom", size, high, *measure(python(write))))
        fixed_voxels = math.prod(spec.fixed_shape)
        rows.append(row_of("read", size, fixed_voxels, *measure(python(READ.format(out=str(out))))))
        rows.append(row_of("write", size, fixed_voxels,
                           *measure(python(WRITE_ONCE.format(out=str(out))))))  # fmt: skip
        largest = size == sizes[-1]
        # the user's run is timed at a real size (not --quick's small pair: a second run there
        # shows nothing the first does not)
        rows.extend(workflow_stages(out, size, voxels, user_run=largest and size != "small"))
        rows.extend(same_block_rows(out, size))
        if largest:
            rows.extend(profile_rows(out, size))
        rows.append(global_stage_row(out, size, voxels["lowres"], GLOBAL_AFFINE))
        rows.extend(api_rows(out, size, voxels["lowres"]))
        if size == sizes[0]:  # another imaging round's pair (no deformation)
            measure(python(WRITE_ROUND.format(size=size, out=str(out / "round"))))
            rows.extend(api_rows(out / "round", size, voxels["lowres"], "_round"))
        if size in bigstream_sizes:
            rows.extend(bigstream_side.bigstream_rows(out, size, voxels, measure, row_of,
                                                      GLOBAL_AFFINE, LOCAL_AFFINE))  # fmt: skip
        if size in bigstream_sizes and size in TUTORIAL_SIZES:
            tutorial = out / "tutorial"
            measure(python(WRITE_TUTORIAL.format(size=size, out=str(tutorial))))
            rows.append(global_stage_row(tutorial, size, voxels["lowres"], TUTORIAL_KEYPOINTS,
                                         "_tutorial"))  # fmt: skip
            rows.extend(bigstream_side.bigstream_rows(tutorial, size, voxels, measure, row_of,
                                                      TUTORIAL_KEYPOINTS, LOCAL_AFFINE,
                                                      ("ransac",), "_tutorial"))  # fmt: skip
        print(pd.DataFrame(rows).to_string(index=False), flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the small pair only (minutes)")
    parser.add_argument("--sizes", nargs="+", help="phantom presets to run (default: S 2S 4S 8S)")
    parser.add_argument(
        "--with-bigstream",
        action="store_true",
        help="also run bigstream 5.0.3 (own virtualenv) on the same pairs",
    )
    parser.add_argument("--bigstream-sizes", nargs="+",
                        help="sizes bigstream runs on (default: the smallest one run)")  # fmt: skip
    parser.add_argument("--dag", nargs="*", type=int,
                        help="deform block counts to plan (default 1000 10000)")  # fmt: skip
    args = parser.parse_args()
    sizes = args.sizes or (["small"] if args.quick else ["S", "2S", "4S", "8S"])
    bigstream_sizes = (args.bigstream_sizes or sizes[:1]) if args.with_bigstream else []
    counts = args.dag if args.dag is not None else ([1000] if args.quick else [1000, 10000])
    table = run(sizes, bigstream_sizes)
    memory = pd.concat(
        [memory_table(WORK / size / "workflow" / "results").assign(size=size) for size in sizes]
    )
    if counts:  # grouped planning grows faster than linearly: up to 1k blocks only
        plans = [dry_run(n, WORK, mode) for n in [1, *counts]
                 for mode in ("plain", "grouped", "batched", "auto")
                 if (mode != "grouped" or n <= 1000) and (mode != "batched" or n > 1)
                 and (mode != "auto" or n >= 10000)]  # fmt: skip
        table = pd.concat([table, pd.DataFrame(plans)])
    tables = {"latest": table, "latest_scaling": scaling(table), "latest_memory": memory}
    if bigstream_sizes:
        tables["latest_bigstream"] = pd.DataFrame(bigstream_side.ratios(table))
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / "latest.tsv", sep="\t", index=False)
    profile = WORK / sizes[-1] / "profile.json"
    if profile.exists():
        tables["latest_profile"] = pd.DataFrame(json.loads(profile.read_text())["top"])
    for name, frame in tables.items():
        text = frame.to_markdown(index=False) if not frame.empty else "(nothing to compare)"
        (RESULTS / f"{name}.md").write_text(text + "\n")
        print(f"\n{name}.md\n{text}")
    print(f"\nwritten: {RESULTS}/latest.tsv, {', '.join(f'{name}.md' for name in tables)}")


if __name__ == "__main__":
    main()
