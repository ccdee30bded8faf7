#!/usr/bin/env python3
"""The cluster bill of a terabyte pair, on paper, from a measured run.

    python benchmarks/bill.py [--size 64S] [--shape 2000 10000 12500] [--lowres-factor 4]
                              [--cores-per-node 32] [--node-gb 256] [--nodes 1 10 100]

What it rests on (each named in the output):

- **per-rule measurements** of one real run, ``benchmarks/scale.py`` at ``--size``
  (``results/latest_scale_rules.tsv``: jobs, summed job seconds, largest job's peak memory;
  ``results/latest_scale_written.json``: files and bytes per result folder): each rule's
  job seconds per voxel of the level it works on (high-res: deform, stitch, resample,
  pyramid; low-res: key points, local affines, inspection images; none: the global fit
  and refinement, whose work follows their sample counts, and the report);
- **the jobs** of every rule for the target pair: a dry run of the workflow with the
  default config on a metadata-only pair of that shape (``benchmarks/dag.py``'s stores, no
  voxel written), so batching (``blocks_per_job: auto``) is the workflow's own;
- the target: two images of ``--shape`` uint16 voxels each (default 2.5 x 10^11 voxels,
  0.5 TB each: a 1 TB pair), their low-res level ``--lowres-factor`` times smaller per axis
  (default 4: 3.9 x 10^9 voxels, 7.8 GB, inside the 2-16 GB that labs' low-res levels
  have); no ground truth (a user's run: no accuracy job).

Per rule and stage it gives the jobs, core-hours (job seconds x the rule's threads),
the peak memory of one job (the measured one: it follows the block, not the image), and
for clusters of N nodes x C cores the expected wall time: each rule's jobs in waves of as
many as fit the nodes' cores and memory, each wave as long as the rule's mean job; a
stage's rules one after the other (both inspection images' block jobs in one pool), plus a
fixed queue latency per stage (``--queue-s``, default 60 s; a busy cluster adds more); the
high-res chain's stages in turn (global, local, deform, stitch, resample, pyramid), the
low-res inspection images beside it after the affine stages, then the report. Files and
bytes written are the measured run's per voxel of the level their folder follows (the
low-res one for the affine stages' key points, tiles and inspection images, the high-res
one for the rest), logs and benchmark files per job. bigstream 5's deformation is set
beside, from its measured 8S run (``BIGSTREAM_8S``), scaled per fixed voxel the same way.
The dry run's job counts are kept beside its stores (``planned_jobs.json``) and reused
while the config is the same (``--replan`` after a change to the workflow's planning).

Writes ``results/latest_bill.md`` (and ``.tsv``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
from dag import write_metadata_pair  # noqa: E402

# rule -> (level whose voxels its time follows: "highres", "lowres" or None, threads)
RULE_BASIS = {
    "foreground_mask": ("lowres", 1), "detect_keypoints": ("lowres", 1),
    "match_keypoints": (None, 2), "fit_global_affine": (None, 1),
    "refine_global_affine": (None, 1), "fit_local_affine": ("lowres", 1),
    "deform_block": ("highres", 1), "stitch_field": ("highres", 1),
    "invert_field": ("highres", 1), "resample_block": ("highres", 1),
    "downsample_aligned": ("highres", 1), "finalize_aligned": (None, 1),
    "lowres_view_block": ("lowres", 1), "finalize_lowres_view": ("lowres", 1),
    "qc_report": (None, 1),
}  # fmt: skip
STAGE_ORDER = ("global", "local", "deform", "stitch", "resample", "pyramid", "views", "report")
CHAIN = ("global", "local", "deform", "stitch", "resample", "pyramid")
"""Stages whose jobs wait for the stage before (the high-res chain)."""
RULE_STAGE = {
    "foreground_mask": "global", "detect_keypoints": "global", "match_keypoints": "global",
    "fit_global_affine": "global", "refine_global_affine": "global",
    "fit_local_affine": "local", "deform_block": "deform", "stitch_field": "stitch",
    "invert_field": "stitch", "resample_block": "resample", "downsample_aligned": "pyramid",
    "finalize_aligned": "pyramid", "lowres_view_block": "views",
    "finalize_lowres_view": "views", "qc_report": "report",
}  # fmt: skip
# bigstream 5.0.3's distributed deformation on the 8S pair (300 x 500 x 900 fixed voxels),
# 2 dask workers, benchmarks/bigstream_side.py's settings: benchmarks/results/
# 2026-12-02-session9.md (the only run of it at 8S that finished; session 11's did not
# finish in 3150 s, so this is a lower bound on its cost).
BIGSTREAM_8S = {"wall_s": 2163.29, "cpu_s": 2879.72, "peak_mb": 4469.6,
                "fixed_voxels": 300 * 500 * 900, "workers": 2}  # fmt: skip


def planned_jobs(
    shape: tuple[int, int, int], lowres_factor: int, work: Path, replan: bool = False
) -> dict[str, int]:
    """Jobs per rule of a dry run with the defaults on a metadata-only pair of ``shape``
    (the counts of an earlier dry run with the same config, unless ``replan``)."""
    folder = work.resolve() / f"bill_{'x'.join(map(str, shape))}_low{lowres_factor}"
    write_metadata_pair(folder, shape, lowres_factor)
    spacing = [1.0, 1.0, 1.0]
    config = {role: {"path": str(folder / f"{role}.zarr"), "spacing": spacing}
              for role in ("fixed", "moving")}  # fmt: skip
    config["output_dir"] = str(folder / "results")
    text = yaml.safe_dump(config)
    planned = folder / "planned_jobs.json"  # kept: a dry run of this size takes minutes
    if not replan and planned.exists() and (folder / "config.yaml").read_text() == text:
        return json.loads(planned.read_text())
    (folder / "config.yaml").write_text(text)
    command = [sys.executable, "-m", "snakemake", "--dry-run", "--quiet", "rules",
               "--snakefile", str(ROOT / "workflow" / "Snakefile"), "--directory", str(folder),
               "--profile", str(ROOT / "profiles" / "local"), "--cores", "2",
               "--configfile", str(folder / "config.yaml")]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"dry run failed:\n{(result.stdout + result.stderr)[-3000:]}")
    output = result.stdout
    counts = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", output, re.MULTILINE)}
    counts.pop("total", None)
    planned.write_text(json.dumps(counts))
    return counts


def measured(size: str) -> tuple[pd.DataFrame, dict]:
    """The per-rule table and the run summary of ``scale.py``'s run at ``size``."""
    rules = pd.read_csv(RESULTS / "latest_scale_rules.tsv", sep="\t")
    rules = rules[rules["size"] == size].set_index("rule")
    runs = json.loads((RESULTS / "latest_scale_written.json").read_text())
    run = next((summary for summary in runs if summary["size"] == size), None)
    if rules.empty or run is None:
        raise SystemExit(f"no {size} run in {RESULTS / 'latest_scale_rules.tsv'}: run "
                         f"benchmarks/scale.py --sizes {size} first")  # fmt: skip
    return rules, run


def bill(args) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    rules, run = measured(args.size)
    fixed_m = math.prod(int(n) for n in run["fixed_shape"].split("x"))
    moving_m = math.prod(int(n) for n in run["moving_shape"].split("x"))
    # voxels the rule's jobs work on at the measured size (both images for the key points
    # and masks; the fixed grid for the rest) and at the target
    target = math.prod(args.shape)
    low_target = math.prod(max(1, n // args.lowres_factor) for n in args.shape)
    scale = {
        "highres": target / fixed_m,
        "lowres": low_target / (fixed_m / 8),  # the measured pair's low-res level is 2x2x2
        None: 1.0,
    }
    both = {"detect_keypoints", "foreground_mask"}
    jobs = planned_jobs(tuple(args.shape), args.lowres_factor, args.work, args.replan)
    rows = []
    for rule, (basis, threads) in RULE_BASIS.items():
        if rule not in rules.index or rule not in jobs:
            continue
        row = rules.loc[rule]
        factor = scale[basis]
        if rule in both:  # both images' low-res levels
            factor = 2 * low_target / ((fixed_m + moving_m) / 8)
        job_s = float(row["job_s"]) * factor
        rows.append({"rule": rule, "stage": RULE_STAGE[rule], "level": basis or "-",
                     "jobs": jobs[rule], "threads": threads,
                     "core_h": round(job_s * threads / 3600, 1),
                     "mean_job_min": round(job_s / jobs[rule] / 60, 1),
                     "peak_mb_per_job": row["peak_mb"],
                     "measured_jobs": int(row["jobs"]),
                     "measured_job_s": row["job_s"]})  # fmt: skip
    per_rule = pd.DataFrame(rows)
    walls = []
    for nodes in args.nodes:
        stage_s = {}
        for stage in STAGE_ORDER:
            rules = []
            for _, row in per_rule[per_rule["stage"] == stage].iterrows():
                by_memory = int(args.node_gb * 1024 // row["peak_mb_per_job"])
                slots_per_node = min(args.cores_per_node // row["threads"], by_memory)
                waves = math.ceil(row["jobs"] / (nodes * slots_per_node))
                rules.append(waves * row["mean_job_min"] * 60)
            # a stage's rules one after the other (each reads the one before)
            seconds = sum(rules)
            stage_s[stage] = seconds + args.queue_s * (seconds > 0)
        # the inspection images need only the affine stages: they run beside the high-res ones
        chain = sum(stage_s[stage] for stage in CHAIN)
        beside = stage_s["global"] + stage_s["local"] + stage_s["views"]
        total = max(chain, beside) + stage_s["report"]
        walls.append({"nodes": nodes, "cores": nodes * args.cores_per_node,
                      **{f"{stage}_h": round(s / 3600, 2) for stage, s in stage_s.items()},
                      "wall_h": round(total / 3600, 2)})  # fmt: skip
    written = run["written"]
    # result folders by what their files follow: the jobs (logs, benchmark files), the
    # low-res level (the global and local stages: key points, tiles, inspection images) or
    # the high-res one (the rest: deform blocks, field, output)
    per_entry = {"logs": None, "benchmarks": None, "global": "lowres", "local": "lowres"}
    files = size = 0.0
    for entry, (count, nbytes) in written.items():
        basis = per_entry.get(entry, "highres")
        if basis is None:
            files += count / run["jobs"] * sum(jobs.values())
            continue
        files += count * scale[basis]
        size += nbytes * scale[basis]
    out = {
        "files": round(files),
        "field_gb": round(written["transform"][1] * scale["highres"] / 1e9, 1),
        "output_gb": round(written["aligned.ome.zarr"][1] * scale["highres"] / 1e9, 1),
        "deform_blocks_gb": round(written["deform"][1] * scale["highres"] / 1e9, 1),
        "all_gb": round(size / 1e9, 1),
        "target_voxels_per_image": target,
        "lowres_voxels_per_image": low_target,
        "measured": f"scale.py at {args.size} ({run['started']}), "
        f"{run['fixed_shape']} fixed voxels",
    }
    fixed_8s = BIGSTREAM_8S["fixed_voxels"]
    out["bigstream_deform_core_h"] = round(BIGSTREAM_8S["cpu_s"] * target / fixed_8s / 3600, 1)
    out["bigstream_deform_worker_h"] = round(
        BIGSTREAM_8S["wall_s"] * BIGSTREAM_8S["workers"] * target / fixed_8s / 3600, 1
    )
    return per_rule, pd.DataFrame(walls), out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size", default="64S", help="the scale.py run to scale from")
    parser.add_argument("--shape", nargs=3, type=int, default=[2000, 10000, 12500],
                        help="z y x voxels of each image of the target pair")  # fmt: skip
    parser.add_argument("--lowres-factor", type=int, default=4)
    parser.add_argument("--cores-per-node", type=int, default=32)
    parser.add_argument("--node-gb", type=float, default=256)
    parser.add_argument("--nodes", nargs="+", type=int, default=[1, 10, 100])
    parser.add_argument("--queue-s", type=float, default=60)
    parser.add_argument("--work", type=Path, default=RESULTS / "work")
    parser.add_argument("--replan", action="store_true",
                        help="plan again even if the config is unchanged (after a change to "
                        "the workflow's planning or batching)")  # fmt: skip
    args = parser.parse_args()
    per_rule, walls, out = bill(args)
    per_stage = per_rule.groupby("stage", sort=False).agg(
        jobs=("jobs", "sum"), core_h=("core_h", "sum"), peak_mb_per_job=("peak_mb_per_job", "max")
    )
    text = "\n\n".join([
        f"Target: two images of {' x '.join(map(str, args.shape))} uint16 voxels, low-res "
        f"level {args.lowres_factor}x smaller per axis; measured: {out['measured']}; nodes of "
        f"{args.cores_per_node} cores and {args.node_gb:g} GB; {args.queue_s:g} s queue "
        "latency per stage.",
        per_rule.to_markdown(index=False), per_stage.reset_index().to_markdown(index=False),
        walls.to_markdown(index=False),
        "\n".join(f"- {key}: {value}" for key, value in out.items()),
    ])  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    per_rule.to_csv(RESULTS / "latest_bill.tsv", sep="\t", index=False)
    (RESULTS / "latest_bill.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
