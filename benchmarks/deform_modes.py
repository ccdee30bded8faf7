"""The deformation's modes side by side on the pairs ``deform_pairs.py`` wrote; one command:

    .venv/bin/python benchmarks/deform_modes.py [--sizes S] [--pairs dense_warp ...]
        [--modes default symmetric ...]

Each mode (``MODES``: ``deform`` settings on top of the benchmark's) registers the whole pair
through the Python API (``api.tiled_deformable_align``: the deform jobs' blocks, 128 x 256 x
256 high-res, and the stitching, in one process on one core) from the workflow run's global
affine (on ``dense_warp`` the local stage kept it everywhere, so this is the workflow's
start; on ``dense_warp_round`` the local stage moved the TRE 2.49 -> 2.56 um, and the modes
start without it). Reported per mode: TRE over the fixed high-res foreground and NCC over the
low-res foreground (``bigstream_core.accuracy``, as the QC), the field's smallest Jacobian
determinant and folded voxels, the registration's seconds (wall and CPU: the blocks and the
stitching) and the whole process's wall, CPU (with reading and the accuracy) and peak memory.

Run ``deform_pairs.py`` first (it writes the pairs and their workflow runs). The table is
printed and written to ``benchmarks/results/latest_deform_modes.md`` and ``.tsv``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deform_pairs import PAIRS  # noqa: E402
from run import DEFORM, RESULTS, WORK, measure  # noqa: E402

MODES = {
    "default": {},
    "symmetric": {"gradient": "symmetric"},
    "radius_3_2": {"cc_radius": [3, 2]},
    "symmetric_radius_3_2": {"gradient": "symmetric", "cc_radius": [3, 2]},
    "full_res": {
        "shrink_factors": [4, 2, 1],
        "smooth_sigmas": [2.0, 1.0, 0.5],
        "iterations": [200, 100, 50],
    },  # fmt: skip
}


def one_mode(pair: Path, mode: str) -> None:
    """Register ``pair`` with ``mode`` and write its accuracy to ``pair/modes/<mode>.json``."""
    from bigstream_core.accuracy import evaluate, foreground_ncc
    from bigstream_core.api import tiled_deformable_align
    from bigstream_core.displacement import DisplacementField, jacobian_summary
    from bigstream_core.io import open_image
    from bigstream_core.phantom import GroundTruth
    from bigstream_core.transforms import affine_map, chain, read_affine

    images = {(role, level): open_image(pair / f"{role}.n5", level)
              for role in ("fixed", "moving") for level in ("lowres", "highres")}  # fmt: skip
    fixed, moving = images["fixed", "highres"], images["moving", "highres"]
    affine = read_affine(str(pair / "workflow" / "results" / "global" / "affine.txt"))
    settings = {key: value for key, value in DEFORM.items() if key != "blocksize"}
    start, cpu = time.perf_counter(), time.process_time()
    field = tiled_deformable_align(fixed, moving, None, None, DEFORM["blocksize"],
                                   global_affine=affine,
                                   deform_kwargs={**settings, **MODES[mode]})  # fmt: skip
    seconds = {"register_s": round(time.perf_counter() - start, 1),
               "register_cpu_s": round(time.process_time() - cpu, 1)}  # fmt: skip
    mapping = chain(affine_map(affine), DisplacementField(field, fixed.spacing, fixed.origin))
    truth = GroundTruth.from_json(pair / "truth.json")
    smallest, folded = jacobian_summary(field, fixed.spacing)
    result = {**seconds, "tre_um": evaluate(mapping, truth, fixed, moving)["mean_um"],
              "ncc_fg": foreground_ncc(images["fixed", "lowres"], images["moving", "lowres"],
                                       mapping),
              "jacobian_min": smallest, "folded_voxels": folded}  # fmt: skip
    (pair / "modes").mkdir(exist_ok=True)
    (pair / "modes" / f"{mode}.json").write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["S"])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=PAIRS)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--one", nargs=2, metavar=("PAIR", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one_mode(Path(args.one[0]), args.one[1])
        return
    rows = []
    for size in args.sizes:
        for name in args.pairs:
            pair = WORK / "deform_pairs" / size / name
            if not (pair / "workflow" / "results" / "global" / "affine.txt").exists():
                raise SystemExit(f"{pair}: no workflow run; run deform_pairs.py --sizes {size}")
            for mode in args.modes:
                wall, cpu, rss = measure([sys.executable, __file__, "--one", str(pair), mode])
                result = json.loads((pair / "modes" / f"{mode}.json").read_text())
                timing = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                          "peak_rss_mb": round(rss)}  # fmt: skip
                rows.append({"size": size, "pair": name, "mode": mode,
                             "settings": json.dumps(MODES[mode]), **timing, **result})  # fmt: skip
                print(pd.DataFrame(rows).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    table.to_csv(RESULTS / "latest_deform_modes.tsv", sep="\t", index=False)
    (RESULTS / "latest_deform_modes.md").write_text(
        table.to_markdown(index=False, floatfmt=".4g") + "\n"
    )
    print(f"\nwritten: {RESULTS}/latest_deform_modes.tsv, latest_deform_modes.md")


if __name__ == "__main__":
    main()
