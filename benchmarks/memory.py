"""Declared against measured memory of every tile job of a finished run.

Declared: what the rule asks the scheduler for on the first attempt
(``bigstream_workflow.resources`` on the tile's geometry from ``plan/grid_*.tsv``,
as ``workflow/rules/common.smk`` computes it: for a job of several blocks,
``blocks_per_job``, resolved as the workflow does, its largest block); measured: the job's peak
resident memory (``max_rss`` of its Snakemake benchmark file). One row per
rule: jobs, the largest measured, the smallest and largest margin
(declared / measured).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bigstream_core.tiling import batch_id, parse_tile_id
from bigstream_workflow import resources
from bigstream_workflow.config import field_shrink
from bigstream_workflow.layout import benchmark_glob
from bigstream_workflow.plan import blocks_per_job

# rule -> [(its benchmark files' wildcards, grid table)], resource function, voxels it takes
# ("nodes": the core's nodes of the stored field; the files: bigstream_workflow.layout.RULES)
TILE_RULES = {
    "detect_keypoints": ([({"image": "fixed"}, "keypoints_fixed"),
                          ({"image": "moving"}, "keypoints_moving")],
                         resources.keypoint_job_mem_mb, "halo"),
    "fit_local_affine": ([({}, "local_affine")], resources.local_tile_mem_mb, "halo"),
    "deform_block": ([({}, "deform")], resources.deform_mem_mb, "halo"),
    "stitch_field": ([({}, "deform")], resources.field_region_mem_mb, "nodes"),
    "invert_field": ([({}, "deform")], resources.field_region_mem_mb, "nodes"),
    "resample_block": ([({}, "resample")], resources.resample_mem_mb, "halo"),
}  # fmt: skip


def _voxels(
    grid: pd.DataFrame, which: str, per_job: tuple[int, int, int], step: int = 1
) -> dict[str, int]:
    """Voxels of the largest tile core or halo of each job (a batch of ``per_job`` tiles);
    with ``step``, the core's nodes on every ``step``-th voxel (``tiling.node_tile``)."""
    sizes = [-(-grid[f"{which}_{axis}1"] // step) + (grid[f"{which}_{axis}0"] // -step)
             for axis in "zyx"]  # fmt: skip
    jobs = [batch_id(parse_tile_id(tile), per_job) for tile in grid["tile"]]
    return pd.Series((sizes[0] * sizes[1] * sizes[2]).tolist(), index=jobs).groupby(level=0).max()


def memory_table(results: Path) -> pd.DataFrame:
    """Per tile rule of the run in ``results``: declared vs measured peak memory (MB)."""
    config = json.loads((results / "plan" / "images.json").read_text())["provenance"]["config"]
    rows = []
    for rule, (sources, declare, which) in TILE_RULES.items():
        declared, measured = [], []
        for wildcards, grid in sources:
            table = pd.read_csv(results / "plan" / f"grid_{grid}.tsv", sep="\t")
            setting = config.get(grid, {}).get("blocks_per_job", (1, 1, 1))
            counts = [parse_tile_id(tile) for tile in table["tile"]]
            counts = tuple(max(axis) + 1 for axis in zip(*counts, strict=True))
            per_job = blocks_per_job(setting, counts)
            if which == "nodes":
                voxels = _voxels(table, "core", per_job, field_shrink(config["deform"]))
            else:
                voxels = _voxels(table, which, per_job)
            for path in sorted((results / "benchmarks").glob(benchmark_glob(rule, **wildcards))):
                declared.append(declare(int(voxels[path.stem])))
                measured.append(pd.read_csv(path, sep="\t")["max_rss"].max())
        if not measured:
            continue
        margin = pd.Series(declared) / pd.Series(measured)
        rows.append({"rule": rule, "jobs": len(measured), "declared_mb_max": max(declared),
                     "measured_mb_max": round(float(max(measured)), 1),
                     "margin_min": round(float(margin.min()), 2),
                     "margin_max": round(float(margin.max()), 2)})  # fmt: skip
    return pd.DataFrame(rows)
