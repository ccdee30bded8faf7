#!/usr/bin/env python3
"""The whole workflow end to end at growing sizes: time per voxel and peak memory per rule.

    python benchmarks/scale.py [--sizes S 8S 64S] [--clean]

For each size (a phantom preset: S is 150 x 250 x 450 high-res voxels, 8S 300 x 500 x 900,
64S 600 x 1000 x 1800, about 2.2 GB per image as uint16), the pair of ``benchmarks/run.py``
(sparse cells, a smooth deformation of up to 4 µm on top of the affine, N5 with a
``highres`` level and a 2x2x2-mean ``lowres`` one, the known transform beside it) is
rendered block by block by the phantom generator (kept and reused when its ``truth.json``
is there), then registered by one real Snakemake run with ``profiles/local`` on 2 cores and
the default config, but for what the phantom needs: the key-point and matching parameters
of ``run.py`` (the phantom's cells have radii of 1.5-5 low-res voxels, the defaults search
6-20, the size of real cells) and ``deform.mask_threshold`` (its background is 100 counts).
Deform and resample blocks are the defaults' 256^3, batched by ``blocks_per_job: auto``.

Tables (printed, and written to ``benchmarks/results/latest_scale*.md`` and ``.tsv``; a
size's rows replace that size's rows of an earlier run, the other sizes' are kept, so
``--sizes 64S`` alone adds to an earlier ``--sizes S 8S``):

- ``latest_scale_rules``: per rule and size: jobs, the sum of their seconds and CPU
  seconds, the longest job, the largest job's peak memory (``max_rss`` of the Snakemake
  benchmark files) and that memory relative to the smallest size (flat: near 1);
- ``latest_scale``: per stage and size: the same sums and seconds per voxel of the level
  the stage works on, relative to the smallest size (linear time: near 1);
- ``latest_scale_runs``: per size, the run's wall time and CPU time, its jobs, the TRE
  before and after and the NCC against the known transform, the files and GB written
  (per result folder in ``latest_scale_written.json``, which ``benchmarks/bill.py`` reads);
- ``latest_scale_memory``: per tile rule and size (of the runs still on disk), the memory
  each job declared against its measured peak (``benchmarks/memory.py``).

The 64S pair takes 18 min to render (2.4 GB), its run 52 min on 2 cores (4.8 GB written);
``--clean`` removes each size's pair and run once measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory import memory_table  # noqa: E402
from run import (  # noqa: E402
    DEFORM_UM,
    GLOBAL_AFFINE,
    LOCAL_AFFINE,
    LOWRES_STAGES,
    RESULTS,
    WORK,
    WRITE,
    measure,
    python,
    run_workflow,
)

from bigstream_workflow.layout import RULES, rule_benchmarks, stage_costs  # noqa: E402


def scale_config(out: Path, results: Path) -> dict:
    """The defaults, but for the phantom's key-point radii and background (module doc)."""
    return {
        "fixed": {"path": str(out / "fixed.n5")}, "moving": {"path": str(out / "moving.n5")},
        "output_dir": str(results), "ground_truth": str(out / "truth.json"),
        "global_affine": GLOBAL_AFFINE, "local_affine": LOCAL_AFFINE,
        "deform": {"mask_threshold": 150},
    }  # fmt: skip


def rule_rows(results: Path, size: str) -> list[dict]:
    """Per rule that ran: jobs, summed seconds and CPU seconds, longest job, largest peak MB."""
    rows = []
    for rule, layout in RULES.items():
        files = rule_benchmarks(results, rule)
        if not files:
            continue
        jobs = pd.concat([pd.read_csv(path, sep="\t") for path in files])
        rows.append({"rule": rule, "stage": layout.stage, "size": size, "jobs": len(jobs),
                     "job_s": round(float(jobs["s"].sum()), 1),
                     "cpu_s": round(float(jobs["cpu_time"].sum()), 1),
                     "max_job_s": round(float(jobs["s"].max()), 1),
                     "peak_mb": round(float(jobs["max_rss"].max()), 1)})  # fmt: skip
    return rows


def written(results: Path) -> list[dict]:
    """Files and bytes under each top-level entry of ``results`` (a result folder)."""
    rows = []
    for entry in sorted(results.iterdir()):
        paths = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
        rows.append({"entry": entry.name, "files": len(paths),
                     "bytes": sum(p.stat().st_size for p in paths)})  # fmt: skip
    return rows


def one_size(size: str) -> tuple[list[dict], list[dict], dict]:
    """Render (or reuse) ``size``'s pair and register it: stage rows, rule rows, summary."""
    from bigstream_core.phantom import preset

    spec = preset(size)
    voxels = {"highres": math.prod(spec.fixed_shape) + math.prod(spec.moving_shape)}
    voxels["lowres"] = voxels["highres"] // 8
    out = WORK / size
    out.mkdir(parents=True, exist_ok=True)
    render = (float("nan"),) * 3
    if not (out / "truth.json").exists():
        render = measure(python(WRITE.format(size=size, out=str(out), deform=DEFORM_UM)))
    work = out / "scale"
    results = work / "results"
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    wall, cpu = run_workflow(work, scale_config(out, results))
    accuracy = json.loads((results / "qc" / "accuracy.json").read_text())
    final = accuracy["stages"][-1]
    stages = []
    for stage, jobs in stage_costs(results).items():
        level = voxels["lowres" if stage in LOWRES_STAGES else "highres"]
        stages.append({"stage": stage, "size": size, "voxels": level, "jobs": jobs["jobs"],
                       "job_s": round(jobs["s"], 1), "cpu_s": round(jobs["cpu_s"], 1),
                       "max_job_s": round(jobs["max_job_s"], 1),
                       "peak_mb": round(jobs["peak_mb"], 1),
                       "ns_per_voxel": round(1e9 * jobs["s"] / level, 1)})  # fmt: skip
    files = written(results)
    summary = {"size": size, "fixed_shape": "x".join(map(str, spec.fixed_shape)),
               "moving_shape": "x".join(map(str, spec.moving_shape)),
               "highres_voxels": voxels["highres"], "render_s": round(render[0], 1),
               "started": started, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
               "jobs": sum(row["jobs"] for row in stages),
               "tre_before_um": accuracy["stages"][0]["mean_um"],
               "tre_um": final["mean_um"], "tre_p95_um": final.get("p95_um"),
               "ncc_fg": final["ncc_fg"], "transform": final["transform"],
               "files": sum(row["files"] for row in files),
               "gb_written": round(sum(row["bytes"] for row in files) / 1e9, 2),
               "written": {row["entry"]: (row["files"], row["bytes"]) for row in files},
               "load_avg_1min_end": round(os.getloadavg()[0], 2)}  # fmt: skip
    return stages, rule_rows(results, size), summary


def relative(table: pd.DataFrame, key: str, column: str, name: str) -> pd.DataFrame:
    """``table`` with ``name``: ``column`` over its value at the smallest size, per ``key``."""
    first = table.groupby(key, sort=False)[column].transform("first")
    return table.assign(**{name: (table[column] / first).round(2)})


def declared_memory(sizes: list[str]) -> pd.DataFrame:
    """Per tile rule and size whose run is still on disk: memory declared vs measured
    (``benchmarks/memory.py``)."""
    tables = [memory_table(WORK / size / "scale" / "results").assign(size=size)
              for size in sizes if (WORK / size / "scale" / "results").exists()]  # fmt: skip
    return pd.concat(tables) if tables else pd.DataFrame()


def merged_runs(summaries: list[dict]) -> list[dict]:
    """``summaries`` with the earlier runs' of other sizes (``latest_scale_written.json``),
    smallest size first."""
    path = RESULTS / "latest_scale_written.json"
    sizes = {summary["size"] for summary in summaries}
    earlier = json.loads(path.read_text()) if path.exists() else []
    runs = [summary for summary in earlier if summary["size"] not in sizes] + summaries
    return sorted(runs, key=lambda summary: summary["highres_voxels"])


def merged(name: str, table: pd.DataFrame, order: dict[str, int]) -> pd.DataFrame:
    """``table`` with the rows of the other sizes of ``results/<name>.tsv`` (a size's rows
    come from its last run), by size, smallest first."""
    path = RESULTS / f"{name}.tsv"
    if path.exists():
        earlier = pd.read_csv(path, sep="\t")
        earlier = earlier[~earlier["size"].isin(table["size"]) & earlier["size"].isin(order)]
        table = pd.concat([earlier[table.columns], table])
    rank = table["size"].map(order)
    return table.assign(rank=rank).sort_values("rank", kind="stable").drop(columns="rank")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["S", "8S", "64S"],
                        help="phantom presets, smallest first (default: S 8S 64S)")  # fmt: skip
    parser.add_argument("--clean", action="store_true",
                        help="remove each size's pair and run once measured")  # fmt: skip
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    stages, rules, summaries = [], [], []
    for size in args.sizes:
        stage_rows, rule_table, summary = one_size(size)
        stages += stage_rows
        rules += rule_table
        summaries.append(summary)
        print(json.dumps(summary, indent=1), flush=True)
        if args.clean:
            shutil.rmtree(WORK / size)
    summaries = merged_runs(summaries)
    order = {summary["size"]: summary["highres_voxels"] for summary in summaries}
    stages = merged("latest_scale", pd.DataFrame(stages), order)
    rules = merged("latest_scale_rules", pd.DataFrame(rules), order)
    stage_table = relative(stages, "stage", "ns_per_voxel", "per_voxel_vs_first")
    rule_table = relative(rules, "rule", "peak_mb", "peak_vs_first")
    tables = {"latest_scale": stage_table, "latest_scale_rules": rule_table,
              "latest_scale_runs": pd.DataFrame(summaries).drop(columns="written"),
              "latest_scale_memory": declared_memory(list(order))}  # fmt: skip
    for name, frame in tables.items():
        frame.to_csv(RESULTS / f"{name}.tsv", sep="\t", index=False)
        text = frame.to_markdown(index=False)
        (RESULTS / f"{name}.md").write_text(text + "\n")
        print(f"\n{name}.md\n{text}")
    (RESULTS / "latest_scale_written.json").write_text(json.dumps(summaries, indent=1))


if __name__ == "__main__":
    main()
