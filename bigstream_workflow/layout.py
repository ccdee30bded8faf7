"""The workflow's stages as its rules make them, and what each stage's jobs cost.

A run's jobs leave Snakemake ``benchmark:`` files (seconds, peak memory ``max_rss`` in MB)
under ``<output_dir>/benchmarks/``; in a rounds/sweep run a stage computed by another
set left them in that set's folder (``set.reuse``: result path prefix -> folder).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

STAGE_RULES = {
    "masks": ("foreground_mask",),
    "global_affine": ("detect_keypoints", "match_keypoints", "fit_global_affine"),
    "global_refine": ("refine_global_affine",),
    "local_affine": ("fit_local_affine",),
    "deform": ("deform_block",),
    "stitch_field": ("stitch_field",),
    "invert_field": ("invert_field",),
    "resample": ("resample_block", "finalize_aligned"),
    "lowres_outputs": ("apply_global_affine", "apply_local_affines_lowres"),
    "qc_accuracy": ("evaluate_accuracy",),
    "qc_report": ("qc_report",),
}
"""Stage -> the rules whose jobs make it (those that leave benchmark files)."""


def inverse_wanted(config: dict) -> bool:
    """Whether a run computes the deformation's inverse: asked for (``deform.inverse``), or
    needed to carry a points table from moving space."""
    deform = config["deform"]
    moving_points = any(entry["space"] == "moving" for entry in config.get("points", []))
    return bool(deform["enabled"] and (deform["inverse"] or moving_points))


RULE_BENCHMARKS = {
    "foreground_mask": [("masks/fixed.npy", "foreground_mask/fixed.tsv"),
                        ("masks/moving.npy", "foreground_mask/moving.tsv")],
    "detect_keypoints": [("global/keypoints/fixed", "detect_keypoints/fixed/*.tsv"),
                         ("global/keypoints/moving", "detect_keypoints/moving/*.tsv")],
    "match_keypoints": [("global", "match_keypoints.tsv")],
    "fit_global_affine": [("global", "fit_global_affine.tsv")],
    "refine_global_affine": [("global", "refine_global_affine.tsv")],
    "apply_global_affine": [("global", "apply_global_affine.tsv")],
    "fit_local_affine": [("local", "fit_local_affine/*.tsv")],
    "apply_local_affines_lowres": [("local", "apply_local_affines_lowres.tsv")],
    "deform_block": [("deform", "deform_block/*.tsv")],
    "stitch_field": [("transform", "stitch_field/*.tsv")],
    "invert_field": [("transform", "invert_field/*.tsv")],
    "resample_block": [("{aligned}", "resample_block/{aligned}/*.tsv")],
    "finalize_aligned": [("{aligned}", "finalize_aligned/{aligned}.tsv")],
    "evaluate_accuracy": [(None, "evaluate_accuracy.tsv")],
    "qc_report": [(None, "qc_report.tsv")],
}  # fmt: skip
"""Rule -> (result path prefix its jobs make, or None for the run's own QC; the glob of
its benchmark files under ``benchmarks/``), per image or product where they differ;
``{aligned}`` stands for each aligned product (``aligned``, ``aligned_<channel>``)."""


def rule_benchmarks(folder: str | Path, rule: str, reuse: dict[str, str] | None = None) -> list:
    """The benchmark files of ``rule``'s jobs for the run in ``folder``: in ``folder``, or
    for a result it reuses, in the folder of the set that computed it."""
    reuse = reuse or {}
    files = []
    for prefix, pattern in RULE_BENCHMARKS[rule]:
        for name in _products(folder, reuse) if "{aligned}" in pattern else [""]:
            where = prefix and prefix.format(aligned=name)
            root = Path(reuse.get(where, folder)) if where else Path(folder)
            files += sorted((root / "benchmarks").glob(pattern.format(aligned=name)))
    return files


def _products(folder: str | Path, reuse: dict[str, str]) -> list[str]:
    """The run's aligned products: ``aligned`` and each channel's ``aligned_<name>``, those
    resampled here (a folder of resample benchmarks) and those reused from another set."""
    here = Path(folder) / "benchmarks" / "resample_block"
    made = {path.name for path in here.glob("aligned*") if path.is_dir()}
    reused = {prefix for prefix in reuse if prefix.startswith("aligned") and "." not in prefix}
    return sorted(made | reused | {"aligned"})


def stage_costs(
    folder: str | Path, reuse: dict[str, str] | None = None, stages=None
) -> dict[str, dict]:
    """Per stage that ran (of ``stages``, default all): jobs, the sum of their wall
    seconds and CPU seconds, the longest job (s) and the largest peak memory (MB) of one job."""
    costs = {}
    for stage in stages or STAGE_RULES:
        files = [
            path for rule in STAGE_RULES[stage] for path in rule_benchmarks(folder, rule, reuse)
        ]
        if not files:
            continue
        jobs = pd.concat([pd.read_csv(path, sep="\t") for path in files])
        costs[stage] = {"jobs": len(jobs), "s": float(jobs["s"].sum()),
                        "cpu_s": float(jobs["cpu_time"].sum()), "max_job_s": float(jobs["s"].max()),
                        "peak_mb": float(jobs["max_rss"].max())}  # fmt: skip
    return costs
