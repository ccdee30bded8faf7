"""The summary of a rounds/sweep run: one row per set, its parameters, quality and cost.

Quality comes from each set's ``qc/metrics.tsv`` (the QC report's table: one row per
view, ``before`` / ``global affine`` / ``local affines`` / ``aligned (all stages)``);
cost from the jobs' Snakemake benchmark files (:mod:`bigstream_workflow.layout`), read
where the stage ran: a stage a set reuses is the other set's run, counted in both rows
and named in the ``reused`` column.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from bigstream_workflow.layout import STAGE_RULES, stage_costs

PER_VIEW = ("ncc_fg_mid_planes", "tre_mean_um")
"""Metrics with a value after each stage: columns ``ncc_fg_<view>``, ``tre_<view>_um``."""
STAGE_METRICS = {
    "global affine": ("inliers", "residual_median_um", "residual_p90_um"),
    "local affines": ("failed_share", "filled_share", "kept_global_share"),
    "aligned (all stages)": ("blocks", "ncc_gain_mean", "jacobian_min", "folded_share"),
}
"""Metrics of one stage, by the view they are reported on."""


def view_slug(view: str) -> str:
    """``"aligned (all stages)"`` -> ``"aligned"``, ``"global affine"`` -> ``"global_affine"``."""
    return re.sub(r"\W+", "_", view.split(" (")[0]).strip("_")


def quality(metrics: pd.DataFrame) -> dict[str, Any]:
    """One set's quality columns from its QC metrics table."""
    row: dict[str, Any] = {}
    views = metrics.set_index("stage")
    for view, values in views.iterrows():
        slug = view_slug(view)
        row[f"ncc_fg_{slug}"] = values.get("ncc_fg_mid_planes")
        if pd.notna(values.get("tre_mean_um")):
            row[f"tre_{slug}_um"] = values["tre_mean_um"]
        for metric in STAGE_METRICS.get(view, ()):
            row[metric] = values.get(metric)
    return row


def summary_table(sets: list[dict[str, Any]]) -> pd.DataFrame:
    """The summary of ``sets`` (each: ``name``, ``round``, ``params`` dotted key -> value,
    ``folder``, ``reuse`` prefix -> folder), one row per set, best first: by the final
    TRE when the run knows the truth, else by the final NCC over the fixed foreground
    (``rank`` 1 is the best)."""
    rows = []
    for entry in sets:
        folder = Path(entry["folder"])
        row: dict[str, Any] = {"set": entry["name"], "round": entry["round"]}
        row |= {key: _cell(value) for key, value in entry["params"].items()}
        row |= quality(pd.read_csv(folder / "qc" / "metrics.tsv", sep="\t"))
        total_s = 0.0
        for stage, cost in stage_costs(folder, entry["reuse"]).items():
            row[f"{stage}_s"] = round(cost["s"], 2)
            row[f"{stage}_peak_mb"] = round(cost["peak_mb"], 1)
            total_s += cost["s"]
        row["jobs_s_total"] = round(total_s, 2)
        owners: dict[str, list[str]] = {}
        for prefix, owner in entry["reuse"].items():
            owners.setdefault(_relative(owner, folder), []).append(prefix)
        row["reused"] = "; ".join(f"{', '.join(p)} from {o}" for o, p in owners.items())
        rows.append(row)
    table = pd.DataFrame(rows)
    if table["round"].isna().all():
        table = table.drop(columns="round")
    if "tre_aligned_um" in table:
        order = table["tre_aligned_um"].rank(method="min")
    else:
        order = table["ncc_fg_aligned"].rank(method="min", ascending=False)
    table.insert(1, "rank", order.astype(int))
    return table.sort_values(["rank", "set"]).reset_index(drop=True)


def _cell(value: Any) -> Any:
    """A parameter value as a table cell (lists as their text)."""
    return str(value) if isinstance(value, (list, dict)) else value


def _relative(owner: str, folder: Path) -> str:
    """The owner's folder as the summary names it: relative to the sets' common root."""
    root = Path(owner)
    for parent in folder.parents:
        if root.is_relative_to(parent):
            return str(root.relative_to(parent))
    return owner


def set_label(row: pd.Series, params: list[str]) -> str:
    """A set's label in the plot: its rank, round and parameter values, one per line."""
    lines = [f"{row['rank']}. round {row['round']}" if row.get("round") else f"{row['rank']}."]
    lines += [f"{key} = {row[key]}" for key in params]
    return "\n".join(lines)


def plot_summary(table: pd.DataFrame, params: list[str], path: str | Path) -> None:
    """Two panels, one bar per set (best first): the final accuracy (TRE, or NCC without
    the truth) and the jobs' seconds per stage, stacked; ``params``: the swept keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [set_label(row, params) for _, row in table.iterrows()]
    accuracy = "tre_aligned_um" if "tre_aligned_um" in table else "ncc_fg_aligned"
    stages = [f"{stage}_s" for stage in STAGE_RULES if f"{stage}_s" in table]
    height = 1.5 + len(table) * (0.3 + 0.22 * max(len(params), 1))
    figure, (left, right) = plt.subplots(
        1, 2, figsize=(14, height), sharey=True, gridspec_kw={"width_ratios": [1, 1.4]}
    )
    positions = list(range(len(table)))
    left.barh(positions, table[accuracy], color="tab:purple")
    left.set_xlabel("final mean TRE (µm): lower is better" if accuracy.startswith("tre")
                    else "final NCC over the fixed foreground: higher is better")  # fmt: skip
    left.set_yticks(positions, labels, fontsize=8)
    left.invert_yaxis()
    start = pd.Series(0.0, index=table.index)
    for stage in stages:
        values = table[stage].fillna(0.0)
        right.barh(positions, values, left=start, label=stage.removesuffix("_s"))
        start += values
    right.set_xlabel("seconds of the jobs, per stage")
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle(f"{len(table)} sets, best first")
    figure.tight_layout()
    figure.savefig(path, dpi=100, format="png")
    plt.close(figure)
