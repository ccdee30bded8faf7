"""The workflow's layout: which rule makes which result and benchmark file, in which
stage; what each stage's jobs cost; and the reuse key of each result.

A run's jobs leave Snakemake ``benchmark:`` files (seconds, peak memory ``max_rss`` in MB)
under ``<output_dir>/benchmarks/``; in a rounds/sweep run a stage computed by another
set left them in that set's folder (``set.reuse``: result path prefix -> folder).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class RuleLayout:
    """Where one rule's jobs leave their work: ``stage``, the stage whose cost they count in;
    ``result``, the result path prefix under ``output_dir`` they make (the unit a set may
    reuse from another set; None: the run's own QC); ``benchmark``, their Snakemake
    benchmark file under ``<output_dir>/benchmarks/``, with the rule's wildcards
    (:data:`FOLDER_WILDCARDS`: ``{image}``, fixed or moving; ``{view}``, global or local;
    ``{tile}``, ``{batch}``, ``{level}``: one per job)."""

    stage: str
    result: str | None
    benchmark: str


RULES = {
    "foreground_mask": RuleLayout("masks", "masks/{image}.npy", "foreground_mask/{image}.tsv"),
    "detect_keypoints": RuleLayout("global_affine", "global/keypoints/{image}",
                                   "detect_keypoints/{image}/{tile}.tsv"),
    "match_keypoints": RuleLayout("global_affine", "global", "match_keypoints.tsv"),
    "fit_global_affine": RuleLayout("global_affine", "global", "fit_global_affine.tsv"),
    "refine_global_affine": RuleLayout("global_refine", "global", "refine_global_affine.tsv"),
    "fit_local_affine": RuleLayout("local_affine", "local", "fit_local_affine/{tile}.tsv"),
    "deform_block": RuleLayout("deform", "deform", "deform_block/{batch}.tsv"),
    "stitch_field": RuleLayout("stitch_field", "transform", "stitch_field/{batch}.tsv"),
    "invert_field": RuleLayout("invert_field", "transform", "invert_field/{batch}.tsv"),
    "resample_block": RuleLayout("resample", "aligned", "resample_block/{batch}.tsv"),
    "downsample_aligned": RuleLayout("pyramid", "aligned",
                                     "downsample_aligned/{level}/{batch}.tsv"),
    "finalize_aligned": RuleLayout("pyramid", "aligned", "finalize_aligned.tsv"),
    "lowres_view_block": RuleLayout("lowres_outputs", "{view}",
                                    "lowres_view_block/{view}/{batch}.tsv"),
    "finalize_lowres_view": RuleLayout("lowres_outputs", "{view}",
                                       "finalize_lowres_view/{view}.tsv"),
    "accuracy_foreground_level": RuleLayout("qc_accuracy", None,
                                            "accuracy_foreground_level.tsv"),
    "accuracy_ncc_block": RuleLayout("qc_accuracy", None, "accuracy_ncc_block/{batch}.tsv"),
    "evaluate_accuracy": RuleLayout("qc_accuracy", None, "evaluate_accuracy.tsv"),
    "qc_report": RuleLayout("qc_report", None, "qc_report.tsv"),
}  # fmt: skip
"""The one table of the workflow's layout: rule -> stage, result prefix, benchmark file
(the rules that leave benchmark files; in stage order). The rules' ``benchmark:``
directives, the stages' costs, the key points' benchmark inputs and the reuse keys
(:func:`stage_keys`, one per result prefix) all read it."""

STAGE_RULES = {
    stage: tuple(rule for rule, layout in RULES.items() if layout.stage == stage)
    for stage in dict.fromkeys(layout.stage for layout in RULES.values())
}
"""Stage -> the rules whose jobs make it, in stage order (from :data:`RULES`)."""

IMAGES = ("fixed", "moving")
VIEWS = ("global", "local")
"""The low-res views (bigstream_workflow.lowres_view): each in its stage's result folder."""
FOLDER_WILDCARDS = {"image": IMAGES, "view": VIEWS}
"""Wildcards of :data:`RULES` that pick a result folder, and their values."""
ONE_PER_JOB = ("tile", "batch", "level")
"""Wildcards of :data:`RULES`' benchmark files that take one value per job."""


def folder_values(rule: str) -> list[dict[str, str]]:
    """The values of ``rule``'s folder wildcard (:data:`FOLDER_WILDCARDS`), one dict each
    (``[{}]`` for a rule without one)."""
    layout = RULES[rule]
    for name, values in FOLDER_WILDCARDS.items():
        if "{" + name + "}" in layout.benchmark:
            return [{name: value} for value in values]
    return [{}]


def benchmark_glob(rule: str, **folder: str) -> str:
    """The glob of ``rule``'s benchmark files (under ``benchmarks/``) for one value of its
    folder wildcard (``image=``, ``view=``)."""
    blank = dict.fromkeys(FOLDER_WILDCARDS, "")
    return RULES[rule].benchmark.format(**{**blank, **folder, **dict.fromkeys(ONE_PER_JOB, "*")})


def benchmark_file(rule: str, **wildcards: str) -> str:
    """The benchmark file of one of ``rule``'s jobs (under ``benchmarks/``); wildcards not
    given stay as Snakemake wildcards (``{tile}``)."""
    kept = {name: "{" + name + "}" for name in (*FOLDER_WILDCARDS, *ONE_PER_JOB)}
    return RULES[rule].benchmark.format(**{**kept, **wildcards})


def rule_benchmarks(folder: str | Path, rule: str, reuse: dict[str, str] | None = None) -> list:
    """The benchmark files of ``rule``'s jobs for the run in ``folder``: in ``folder``, or
    for a result it reuses, in the folder of the set that computed it."""
    reuse = reuse or {}
    layout = RULES[rule]
    files = []
    for values in folder_values(rule):
        where = layout.result and layout.result.format(**values)
        root = Path(reuse.get(where, folder)) if where else Path(folder)
        files += sorted((root / "benchmarks").glob(benchmark_glob(rule, **values)))
    return files


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


MATCHING_ONLY = ("match_threshold", "align_threshold", "on_failure", "refine")
"""``global_affine`` keys that key point detection does not read."""


def inverse_wanted(config: dict[str, Any]) -> bool:
    """Whether a run computes the deformation's inverse: asked for (``deform.inverse``), or
    needed to carry a points table from moving space."""
    deform = config["deform"]
    moving_points = any(entry["space"] == "moving" for entry in config.get("points", []))
    return bool(deform["enabled"] and (deform["inverse"] or moving_points))


def without_keys(block: dict[str, Any], keys) -> dict[str, Any]:
    """``block`` less ``keys``."""
    return {key: value for key, value in block.items() if key not in keys}


def _digest(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _image_entry(config: dict[str, Any], role: str) -> dict[str, Any]:
    """The entry of an image as its stages read it (other channels are resampling only)."""
    return without_keys(config[role], ("channels",))


def stage_keys(config: dict[str, Any]) -> dict[str, str]:
    """The reuse key of every result prefix a run with ``config`` makes (the ``result`` of
    :data:`RULES`, for each image and aligned product, and each aligned product's
    ``.ome.zarr`` store): a digest of the config sections it reads and of the keys of the
    results it builds on. Two sets with the same key compute the same result, so it is
    computed once (a section is read whole: less sharing, never a wrong one; only
    :data:`MATCHING_ONLY` is left out of the key points' key)."""
    keys: dict[str, str] = {}
    for role in IMAGES:
        mask = _digest(_image_entry(config, role), config["foreground"])
        keys[f"masks/{role}.npy"] = mask
        keys[f"global/keypoints/{role}"] = _digest(
            mask, without_keys(config["global_affine"], MATCHING_ONLY)
        )
    keys["global"] = _digest(
        keys["global/keypoints/fixed"], keys["global/keypoints/moving"],
        config["global_affine"], config["seed"],
    )  # fmt: skip
    keys["local"] = _digest(keys["global"], config["local_affine"], config["foreground"])
    keys["deform"] = _digest(keys["local"], config["deform"])
    keys["transform"] = _digest(keys["deform"], inverse_wanted(config))
    for name in ("aligned", "aligned.ome.zarr"):  # every channel of the round, in one store
        keys[name] = _digest(keys["transform"], config["resample"], config["output"],
                             config["moving"].get("channels", []))  # fmt: skip
    return keys


def result_prefixes() -> set[str]:
    """Every result prefix of :data:`RULES` for both images."""
    return {
        layout.result.format(**values)
        for rule, layout in RULES.items() if layout.result
        for values in folder_values(rule)
    }  # fmt: skip
