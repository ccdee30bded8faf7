#!/usr/bin/env python3
"""Peak memory and wall time of the global refinement and the automatic mask, each job in
its own process, with this code and with another checkout (the code before), at S, 8S and
64S; the refinement's TRE against the known affine.

    python benchmarks/refine_mask_memory.py --pairs DIR --before CHECKOUT [--sizes S 8S 64S]
        [--skip-before 64S] [--codes before now] [--out benchmarks/results/refine_mask.tsv]

``DIR`` holds phantom pairs of another imaging round (``phantom.another_round``, no
deformation) written by ``phantom.write_pair`` as ``DIR/S`` and ``DIR/8S`` (presets S and
8S). The low-res level the affine stages work on is stood for by an image of its shape:
S's by ``S/lowres`` (75 x 125 x 225), 8S's by ``S/highres`` (150 x 250 x 450), 64S's by
``8S/highres`` (300 x 500 x 900), so 64S needs no 64S render. Jobs:

- ``refine_global_affine``: ``refine_by_intensity`` with the config's defaults from the true
  affine put about half a low-res voxel off (the refinement tests' error: a shift, 0.3
  degrees and 0.4 % scale), no masks; TRE (mean over the fixed foreground) before / after,
  computed in this process afterwards;
- ``foreground_mask``: the automatic Otsu mask of the fixed image written to ``.npy`` as
  the rule does (before: ``config_mask`` and ``atomic.write_npy``; now:
  ``write_config_mask``); the two masks are compared voxel by voxel.

Peak memory is the job process's ``VmHWM`` (its resident high-water mark) in MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

LEVELS = {"S": ("S", "lowres"), "8S": ("S", "highres"), "64S": ("8S", "highres")}

REFINE = """
import json, time, numpy as np
from bigstream_core.intensity_refine import refine_by_intensity
from bigstream_core.io import open_image
folder, level, start = {folder!r}, {level!r}, np.array({start!r})
fixed, moving = (open_image(f"{{folder}}/{{r}}.n5", level) for r in ("fixed", "moving"))
t = time.perf_counter()
matrix, report = refine_by_intensity(fixed, moving, start)
wall = time.perf_counter() - t
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"wall_s": wall, "peak_mb": int(hwm) / 1024, "affine": matrix.tolist(),
                  "status": report["status"],
                  "samples": [lv.get("samples") for lv in report["levels"]],
                  "rounds": [lv.get("rounds", 1) for lv in report["levels"]]}}))
"""

MASK = """
import json, time
from bigstream_core.io import open_image
folder, level, out, new = {folder!r}, {level!r}, {out!r}, {new!r}
levels = {{"lowres": open_image(f"{{folder}}/fixed.n5", level),
           "highres": open_image(f"{{folder}}/fixed.n5", "highres")}}
foreground = {{"auto": "otsu", "percentile": 50.0, "smooth_um": 4.0}}
t = time.perf_counter()
if new:
    from bigstream_core.masks import write_config_mask
    write_config_mask(out, {{}}, levels, foreground, "fixed")
else:
    import numpy as np
    from bigstream_core import atomic
    from bigstream_core.masks import config_mask
    atomic.write_npy(out, config_mask({{}}, levels, foreground, "fixed").astype(np.uint8))
wall = time.perf_counter() - t
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"wall_s": wall, "peak_mb": int(hwm) / 1024}}))
"""


def half_voxel_off(affine: np.ndarray, fixed) -> np.ndarray:
    """``affine`` after an error of about half a low-res voxel about the fixed centre."""
    c, s = np.cos(np.radians(0.3)), np.sin(np.radians(0.3))
    error = np.array([[1.004, 0, 0, 0.6], [0, c, -s, -0.5], [0, s, c, 0.4], [0, 0, 0, 1.0]])
    move = np.eye(4)
    move[:3, 3] = np.asarray(fixed.origin) + (np.asarray(fixed.shape) - 1) / 2 * np.asarray(
        fixed.spacing
    )
    return affine @ move @ error @ np.linalg.inv(move)


def job(code: str, root: Path) -> dict:
    """Run ``code`` in its own Python process in ``root`` (its code imported)."""
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--sizes", nargs="+", default=list(LEVELS))
    parser.add_argument("--skip-before", nargs="*", default=[], help="sizes not run before")
    parser.add_argument("--codes", nargs="+", default=["before", "now"], help="which to run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/refine_mask.tsv"))
    args = parser.parse_args()
    from bigstream_core import phantom
    from bigstream_core.accuracy import evaluate
    from bigstream_core.io import open_image
    from bigstream_core.transforms import affine_map

    now = Path(__file__).resolve().parents[1]
    rows = []
    for size in args.sizes:
        pair, level = LEVELS[size]
        folder = args.pairs / pair
        fixed, moving = (open_image(folder / f"{r}.n5", level) for r in ("fixed", "moving"))
        truth = phantom.GroundTruth.from_json(folder / "truth.json")
        start = half_voxel_off(truth.affine, fixed)
        tre_start = evaluate(affine_map(start), truth, fixed, moving)["mean_um"]
        masks = {}
        for code, root in (("before", args.before), ("now", now)):
            if code not in args.codes or (code == "before" and size in args.skip_before):
                continue
            refine = job(REFINE.format(folder=str(folder), level=level, start=start.tolist()), root)
            tre = evaluate(affine_map(np.array(refine["affine"])), truth, fixed, moving)
            rows.append({"size": size, "voxels": int(np.prod(fixed.shape)), "code": code,
                         "job": "refine_global_affine", "peak_mb": round(refine["peak_mb"]),
                         "wall_s": round(refine["wall_s"], 1), "tre_start_um": round(tre_start, 4),
                         "tre_um": round(tre["mean_um"], 4), "status": refine["status"],
                         "samples": refine["samples"], "rounds": refine["rounds"]})  # fmt: skip
            print(rows[-1], flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                out = f"{tmp}/mask.npy"
                mask = job(MASK.format(folder=str(folder), level=level, out=out,
                                       new=code == "now"), root)  # fmt: skip
                masks[code] = np.load(out)
            rows.append({"size": size, "voxels": int(np.prod(fixed.shape)), "code": code,
                         "job": "foreground_mask", "peak_mb": round(mask["peak_mb"]),
                         "wall_s": round(mask["wall_s"], 1),
                         "foreground": round(float(masks[code].mean()), 4)})  # fmt: skip
            print(rows[-1], flush=True)
        if len(masks) == 2:
            differ = int((masks["before"] != masks["now"]).sum())
            rows[-1]["mask_voxels_differing_from_before"] = differ
    args.out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, sep="\t", index=False)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
