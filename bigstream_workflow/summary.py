"""The text a finished run prints: where the results are and how accurate they are."""

from __future__ import annotations

import csv
import json
import os


def run_summary(out_dir: str, tile_counts: dict[str, int]) -> str:
    """Summary of a run under ``out_dir`` (paths absolute, TRE in µm when known);
    ``tile_counts``: tiles per stage grid."""
    out_dir = os.path.abspath(out_dir)
    lines = ["", "bigstream-workflow finished.", f"  results: {out_dir}"]
    lines.append(f"  plan:    {os.path.join(out_dir, 'plan', 'images.json')}")
    for name, count in tile_counts.items():
        lines.append(f"    grid {name}: {count} tiles")
    lines += nonfinite_lines(out_dir)
    field_path = os.path.join(out_dir, "transform", "field.json")
    if os.path.exists(field_path):
        with open(field_path, encoding="utf-8") as handle:
            field = json.load(handle)
        lines.append(
            f"  deformation: {field['store']}: largest displacement {field['max_um']:.2f} um, "
            f"smallest Jacobian determinant {field['jacobian_min']:.3f}, "
            f"{field['folded_voxels']} folded nodes (one every {field.get('shrink', 1)} voxels)"
        )
    inverse_path = os.path.join(out_dir, "transform", "inverse_field.json")
    if os.path.exists(inverse_path):
        with open(inverse_path, encoding="utf-8") as handle:
            inverse = json.load(handle)
        lines.append(
            f"  inverse: {inverse['store']}: inverse-consistency error |d(x) + e(x + d(x))| "
            f"mean {inverse['round_trip_mean_um']:.4f} um, "
            f"max {inverse['round_trip_max_um']:.4f} um"
        )
    accuracy_path = os.path.join(out_dir, "qc", "accuracy.json")
    if os.path.exists(accuracy_path):
        with open(accuracy_path, encoding="utf-8") as handle:
            accuracy = json.load(handle)
        lines.append(f"  accuracy against the ground truth ({accuracy_path}):")
        for stage in accuracy.get("stages", [accuracy]):
            lines.append(
                "    {transform}: TRE mean {mean_um:.2f} um, p95 {p95_um:.2f} um, "
                "max {max_um:.2f} um over {n_points} points; NCC {ncc_fg:.3f}".format(**stage)
            )
    lines += stage_ncc_lines(os.path.join(out_dir, "qc", "metrics.tsv"))
    return "\n".join(lines)


LISTED_BLOCKS = 10
"""Most block ids a warning about NaN or infinite voxels names."""


def nonfinite_lines(out_dir: str) -> list[str]:
    """Warnings for the NaN or infinite voxels the run read as background (0): each image's
    count on its low-res level (the plan's), and per block stage (deform, resample) the
    sums of the blocks' own counts of what they read (halos and windows included, so a
    voxel read by two blocks counts twice) and the blocks that met any."""
    lines = []
    plan = _read_json(os.path.join(out_dir, "plan", "images.json"))
    for role, count in plan.get("nonfinite_lowres_voxels", {}).items():
        if count:
            lines.append(f"  WARNING: {role} image: {count} NaN or infinite voxels on its "
                         "low-res level, read as background (0)")  # fmt: skip
    stages = {"deform": [], "resample": []}  # per block: id, {image: count}
    deform_path = os.path.join(out_dir, "deform", "report.tsv")
    if os.path.exists(deform_path):
        with open(deform_path, encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                counts = {role: int(float(row.get(f"nonfinite_{role}") or 0))
                          for role in ("fixed", "moving")}  # fmt: skip
                stages["deform"].append((row["tile"], counts))
    aligned = _read_json(os.path.join(out_dir, "aligned", "complete.json"))
    for block in aligned.get("blocks", []):  # a record from before the counts: none
        counts = {"moving": sum(block.get("nonfinite_moving", []))}
        stages["resample"].append((block["tile"], counts))
    for stage, blocks in stages.items():
        hit = [tile for tile, counts in blocks if any(counts.values())]
        if not hit:
            continue
        roles = dict.fromkeys(role for _, counts in blocks for role in counts)
        totals = {role: sum(counts.get(role, 0) for _, counts in blocks) for role in roles}
        named = ", ".join(hit[:LISTED_BLOCKS]) + (", ..." if len(hit) > LISTED_BLOCKS else "")
        lines.append(
            f"  WARNING: {stage} blocks read NaN or infinite voxels as background (0): "
            + ", ".join(f"{role} {count}" for role, count in totals.items())
            + f" (halos included), in {len(hit)} of {len(blocks)} blocks: {named}"
        )
    return lines


def _read_json(path: str) -> dict:
    """The JSON object in ``path``; {} when there is no such file."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def stage_ncc_lines(metrics_path: str) -> list[str]:
    """The QC's NCC over the fixed foreground after each stage, side by side, and a warning
    for each stage that lowered it (nothing when the run made no QC table)."""
    if not os.path.exists(metrics_path):
        return []
    import pandas as pd  # here: the summary of a run without QC needs no pandas

    ncc = pd.read_csv(metrics_path, sep="\t").set_index("stage")["ncc_fg_mid_planes"].dropna()
    lines = ["  NCC over the fixed foreground (mid-planes, " + metrics_path + "):"]
    lines.append("    " + ", ".join(f"{stage} {value:.4f}" for stage, value in ncc.items()))
    steps = list(ncc.items())
    for (earlier, before), (stage, after) in zip(steps, steps[1:], strict=False):
        if after < before:
            lines.append(
                f"  WARNING: {stage} lowered the NCC over the fixed foreground ({earlier} "
                f"{before:.4f} -> {after:.4f}); see the stage's report"
            )
    return lines
