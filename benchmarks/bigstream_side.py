"""The published bigstream, side by side with ours on the same phantom pair (``--with-bigstream``).

bigstream 5.0.x is never a dependency of this project: it needs zarr < 3 and opencv, so it
lives in its own virtual environment, ``benchmarks/results/bigstream-venv`` (made on first
use from PyPI, ~1 min, reused after). Each of its steps runs in its own process through
``bigstream_steps.py`` and is timed like ours (wall, CPU, peak memory of the largest process,
dask workers included); its accuracy is the TRE of its composed transforms on the same fixed
foreground points, against the same known transform, as our QC measures ours
(``bigstream_core.accuracy``).

Parameters: the key-point ones are ours (``KEYPOINTS``, the phantom's cells); the local
blocks are our local tile grid; the deformation is a B-spline (bigstream's method) on 128^3
blocks with a quarter overlap, images sampled at 2 µm (our finest deform level is ~1.8 µm),
control points every 16 µm after a 32 µm level (the phantom's deformation has wavelengths
of 125 µm and more), correlation metric on a random 10 % of the voxels, 25 iterations per
level. (Control points every 8 µm on all voxels at full resolution took over 12 minutes for
the 2 M-voxel ``small`` pair; these settings 40 s, to the same accuracy.) A local dask
cluster of 2 single-threaded workers runs the piecewise steps (this machine's cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
VENV = HERE / "results" / "bigstream-venv"
REQUIREMENTS = ["bigstream==5.0.3", "zarr<3", "numpy<2.1"]
STEPS = ("ransac", "local", "deform")
# Our stage each bigstream step (row name) is compared with: the global stage as a user's
# workflow run makes it (plan to refined affine), the local and deform stages' jobs.
OURS = {"ransac": "global_stage", "local": "local_affine", "deform": "deform",
        "ransac_tutorial": "global_stage_tutorial"}  # fmt: skip


def venv_python(venv: Path, requirements: list[str]) -> Path:
    """The interpreter of the virtual environment ``venv``, created with ``requirements``
    (pip, PyPI) when missing (also ``syn_side.py``'s)."""
    interpreter = venv / "bin" / "python"
    if not interpreter.exists():
        print(f"creating {venv} with {' '.join(requirements)} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(interpreter), "-m", "pip", "install", "--quiet", *requirements],
                       check=True)  # fmt: skip
    return interpreter


def write_job(out: Path, keypoints: dict, local: dict) -> None:
    """``out/bigstream/job.json`` and ``points.npy`` for ``bigstream_steps.py``."""
    from bigstream_core.accuracy import foreground_points, points_inside
    from bigstream_core.io import open_image
    from bigstream_core.phantom import GroundTruth

    folder = out / "bigstream"
    folder.mkdir(parents=True, exist_ok=True)
    images = {(role, name): open_image(out / f"{role}.n5", name)
              for role in ("fixed", "moving") for name in ("lowres", "highres")}  # fmt: skip
    truth = GroundTruth.from_json(out / "truth.json")
    points = foreground_points(images["fixed", "highres"])
    points = points[points_inside(truth(points), images["moving", "highres"])]
    np.save(folder / "points.npy", points)
    ransac = {"blob_sizes": [keypoints["min_radius"], keypoints["max_radius"]],
              "match_threshold": keypoints["match_threshold"]}  # fmt: skip
    global_ransac = {**ransac, "cc_radius": keypoints.get("cc_radius", 8),
                     "nspots": keypoints.get("nspots", 5000)}  # fmt: skip
    job = {
        "fixed": str(out / "fixed.n5"), "moving": str(out / "moving.n5"),
        **{name: {"spacing": list(images["fixed", name].spacing),
                  "origin": list(images["fixed", name].origin)}
           for name in ("lowres", "highres")},
        "ransac": global_ransac,
        "ransac_local": {**ransac, "cc_radius": local["cc_radius"], "nspots": 2000},
        "local_blocksize": local["blocksize"], "local_overlap": local["overlap"],
        "deform": {"control_point_spacing": 16.0, "control_point_levels": [2, 1],
                   "alignment_spacing": 2.0, "smooth_sigmas": [1.0], "metric": "C",
                   "sampling": "RANDOM", "sampling_percentage": 0.1,
                   "optimizer_args": {"learningRate": 0.25, "minStep": 0.0,
                                      "numberOfIterations": 25}},
        "deform_blocksize": [128, 128, 128], "deform_overlap": 0.25, "workers": 2,
    }  # fmt: skip
    (folder / "job.json").write_text(json.dumps(job, indent=1))


def tre(out: Path, step: str) -> dict:
    """TRE (µm) of bigstream's transforms after ``step`` on the job's points."""
    from bigstream_core.accuracy import transform_error
    from bigstream_core.phantom import GroundTruth

    folder = out / "bigstream"
    mapped = np.load(folder / f"mapped_{step}.npy")
    points = np.load(folder / "points.npy")
    truth = GroundTruth.from_json(out / "truth.json")
    return transform_error(lambda _: mapped, truth, points)


def bigstream_rows(out: Path, size: str, voxels: dict, measure, row_of, keypoints: dict,
                   local: dict, steps=STEPS, suffix: str = "") -> list[dict]:  # fmt: skip
    """One row per bigstream step (of ``steps``, in order; row names end in ``suffix``) on
    the pair in ``out`` (tool ``bigstream 5.0.3``)."""
    interpreter = venv_python(VENV, REQUIREMENTS)
    write_job(out, keypoints, local)
    rows = []
    for step in steps:
        wall, cpu, rss = measure([str(interpreter), str(HERE / "bigstream_steps.py"), step,
                                  str(out)])  # fmt: skip
        error = tre(out, step)
        level = voxels["highres" if step == "deform" else "lowres"]
        row = row_of(step + suffix, size, level, wall, cpu, rss,
                     accuracy=f"TRE {error['mean_um']:.3f} um")  # fmt: skip
        rows.append({**row, "tool": "bigstream 5.0.3", "tre_um": error["mean_um"]})
    return rows


def ratio_row(size: str, step: str, stage: str, ours: dict, theirs: dict) -> dict:
    """ours / theirs for wall time, peak memory and TRE (below 1: ours better)."""
    return {
        "size": size, "bigstream step": step, "our stage": stage,
        "wall ours/theirs": round(ours["wall_s"] / theirs["wall_s"], 3),
        "peak memory ours/theirs": round(ours["peak_rss_mb"] / theirs["peak_rss_mb"], 3),
        "TRE ours/theirs": round(ours["tre_um"] / theirs["tre_um"], 3),
        "TRE ours, theirs (um)": f"{ours['tre_um']:.3f}, {theirs['tre_um']:.3f}",
    }  # fmt: skip


def ratios(table) -> list[dict]:
    """ours / bigstream per step and size, then for the whole chain.

    Our global stage is the wall time of a workflow run from nothing to the refined affine
    (2 cores), our per-tile stages the sum of their jobs (one core), bigstream's steps the
    wall time of their 2-worker cluster; the chain row sets our whole run (every stage and
    resampling; the run without ground truth where there is one, else the one with the QC
    too; 2 cores; memory: our largest job) against bigstream's three steps (no resampling;
    memory: its largest process): both lean in bigstream's favour.
    """
    rows = []
    for size, theirs in table[table["tool"] != "bigstream-workflow"].groupby("size"):
        ours = table[(table["tool"] == "bigstream-workflow") & (table["size"] == size)]
        stage = ours.set_index("stage")
        steps = theirs.set_index("stage")
        rows += [ratio_row(size, step, OURS[step], stage.loc[OURS[step]], steps.loc[step])
                 for step in OURS if step in steps.index and OURS[step] in stage.index]  # fmt: skip
        if not set(STEPS) <= set(steps.index):
            continue
        names = set(stage.index)
        chain = (
            "whole_workflow_no_truth" if "whole_workflow_no_truth" in names else "whole_workflow"
        )
        chain_ours = {"wall_s": stage.loc[chain, "wall_s"],
                      "peak_rss_mb": ours["peak_rss_mb"].max(),
                      "tre_um": stage.loc[OURS["deform"], "tre_um"]}  # fmt: skip
        chain_theirs = {"wall_s": steps["wall_s"].sum(), "peak_rss_mb": steps["peak_rss_mb"].max(),
                        "tre_um": steps.loc["deform", "tre_um"]}  # fmt: skip
        rows.append(ratio_row(size, " + ".join(STEPS), chain, chain_ours, chain_theirs))
    return rows
