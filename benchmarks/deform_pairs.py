"""Our deformation beside ANTs SyN (and, with ``--with-bigstream``, bigstream 5's chain) on
pairs that look like tissue and carry a known warp; one command:

    .venv/bin/python benchmarks/deform_pairs.py [--sizes S 8S] [--with-bigstream]
        [--syn-runs syn syn_cc]

Pairs (``PAIRS``), at each size: ``dense_warp``, the dense preset (``phantom.dense``: tissue
edge to edge, cells of radii 4-10 low-res voxels, rings, fibres, stripes) with a smooth warp of
up to ``WARP_UM`` µm (length scale ``WARP_SCALE_UM``: wavelengths of 2 pi to 4 pi times it, the
largest gradient the phantom allows, 0.25) on top of the affine; ``dense_warp_round``, the same
with the moving image as another imaging round shows it (``phantom.another_round``).

Ours is a whole workflow run (2 cores; the global, local and deform stages with the
benchmark's parameters; at 8S and up key points with the bigstream tutorial's radii, those of
the cells; below, ``SMALL_CELLS_VOX``), its accuracy from ``qc/accuracy.json`` (TRE over the
fixed high-res foreground, NCC over the low-res foreground) and ``transform/field.json``
(smallest Jacobian determinant, folded voxels); its time is the deform and stitching jobs'
seconds (the sum: a one-core machine's time). SyN starts from our global affine (``syn_side.py``).

The table is printed and written to ``benchmarks/results/latest_deform.md`` and ``.tsv``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bigstream_side  # noqa: E402
import syn_side  # noqa: E402
from run import (  # noqa: E402
    GLOBAL_AFFINE,
    LOCAL_AFFINE,
    RESULTS,
    TUTORIAL_KEYPOINTS,
    TUTORIAL_SIZES,
    WORK,
    measure,
    python,
    row_of,
    run_workflow,
    workflow_config,
)

from bigstream_core.phantom import DENSE_RADIUS_VOX  # noqa: E402
from bigstream_workflow.layout import stage_costs  # noqa: E402

WARP_UM = 8.0
WARP_SCALE_UM = 32.0
PAIRS = ("dense_warp", "dense_warp_round")
# Below 8S, cells of half the real radii (2-5 low-res voxels) and the benchmark's key points
# for them: the S pair holds too few cells of the real radii for a global affine.
SMALL_CELLS_VOX = (4.0, 10.0)
WRITE = """
import dataclasses
from bigstream_core.phantom import another_round, dense, preset, write_pair
spec = dense(preset({size!r}), {radii!r})
spec = dataclasses.replace(spec, deform_amplitude_um={warp!r}, deform_scale_um={scale!r})
write_pair({out!r}, another_round(spec) if {round!r} else spec, ome_zarr=False)
"""


def our_rows(out: Path, keypoints: dict) -> list[dict]:
    """A whole workflow run on the pair in ``out`` (``keypoints``: the global affine's key
    point parameters): rows for its global affine and its final transform (global, local,
    deform)."""
    work = out / "workflow"
    results = work / "results"
    run_workflow(work, workflow_config(out, results, keypoints))
    stages = json.loads((results / "qc" / "accuracy.json").read_text())["stages"]
    field = json.loads((results / "transform" / "field.json").read_text())
    costs = stage_costs(results, stages=("global_affine", "global_refine", "deform",
                                         "stitch_field"))  # fmt: skip
    global_affine = next(row for row in stages if row["transform"] == "global affine")
    rows = []
    for label, names, accuracy in (("global", ("global_affine", "global_refine"), global_affine),
                                   ("final", ("deform", "stitch_field"), stages[-1])):  # fmt: skip
        rows.append({"tool": "bigstream-workflow", "stage": label,
                     "wall_s": round(sum(costs[n]["s"] for n in names), 1),
                     "cpu_s": round(sum(costs[n]["cpu_s"] for n in names), 1),
                     "peak_rss_mb": round(max(costs[n]["peak_mb"] for n in names)),
                     "tre_um": accuracy["mean_um"], "ncc_fg": accuracy["ncc_fg"]})  # fmt: skip
    rows[-1] |= {"jacobian_min": field["jacobian_min"], "folded_voxels": field["folded_voxels"]}
    return rows


def pair_rows(size: str, pair: str, with_bigstream: bool, syn_runs: list[str]) -> list[dict]:
    out = WORK / "deform_pairs" / size / pair
    out.mkdir(parents=True, exist_ok=True)
    real = size in TUTORIAL_SIZES
    keypoints = TUTORIAL_KEYPOINTS if real else GLOBAL_AFFINE
    radii = DENSE_RADIUS_VOX if real else SMALL_CELLS_VOX
    write = WRITE.format(size=size, out=str(out), warp=WARP_UM, scale=WARP_SCALE_UM,
                         round=pair.endswith("_round"), radii=radii)  # fmt: skip
    measure(python(write))
    rows = our_rows(out, keypoints)
    affine = out / "workflow" / "results" / "global" / "affine.txt"
    rows += syn_side.syn_rows(out, affine, measure, syn_runs)
    if with_bigstream:
        from bigstream_core.phantom import preset

        spec = preset(size)
        high = math.prod(spec.fixed_shape) + math.prod(spec.moving_shape)
        voxels = {"highres": high, "lowres": high // 8}
        for row in bigstream_side.bigstream_rows(out, size, voxels, measure, row_of,
                                                 keypoints, LOCAL_AFFINE):  # fmt: skip
            rows.append({key: row[key] for key in ("tool", "stage", "wall_s", "cpu_s",
                                                   "peak_rss_mb", "tre_um")})  # fmt: skip
    return [{"size": size, "pair": pair, **row} for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["S"], help="phantom presets (default S)")
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=PAIRS)
    parser.add_argument("--with-bigstream", action="store_true",
                        help="also bigstream 5.0.3's three steps (own virtualenv)")  # fmt: skip
    parser.add_argument("--syn-runs", nargs="*", default=list(syn_side.RUNS),
                        choices=list(syn_side.RUNS),
                        help="SyN's runs (default all; syn_cc_fine takes ~4x syn_cc)")  # fmt: skip
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        for pair in args.pairs:
            rows += pair_rows(size, pair, args.with_bigstream, args.syn_runs)
            print(pd.DataFrame(rows).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / "latest_deform.tsv", sep="\t", index=False)
    (RESULTS / "latest_deform.md").write_text(table.to_markdown(index=False, floatfmt=".4g") + "\n")
    print(f"\nwritten: {RESULTS}/latest_deform.tsv, latest_deform.md")


if __name__ == "__main__":
    main()
