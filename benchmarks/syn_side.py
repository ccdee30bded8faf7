"""ANTs SyN (antspyx), side by side with our deformation on the same phantom pair.

antspyx is never a dependency of this project: it lives in its own virtual environment,
``benchmarks/results/ants-venv`` (made on first use from PyPI, ~1 min, reused after). Each
run is one process of ``syn_steps.py``, timed like our jobs (wall, CPU, peak memory). SyN
registers the pair's low-res level (the level our deformation's finest step works at, with
the default ``shrink_factors: [4, 2]`` on the high-res level) starting from our global affine,
as the issue's user started it from bigstream's. Its accuracy is measured as our QC measures
ours: the TRE of its whole fixed -> moving map on the fixed high-res foreground points, the
NCC over the low-res foreground (``bigstream_core.accuracy``), and the field's smallest
Jacobian determinant and folded voxels.

Runs (``RUNS``): ``syn``, antspyx's ``SyNOnly`` with its defaults (Mattes mutual information,
iterations 40 x 20 x 0 at shrink 4 x 2 x 1), as the issue's user ran it; ``syn_cc``, the same
with the local cross-correlation metric of radius 2 (the field's usual choice for
same-modality images, and the metric our deformation uses); ``syn_cc_fine``, that with 10
iterations at full resolution too (SyN's defaults stop at half the level's resolution, a
coarser grid than our finest level).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from bigstream_side import venv_python

HERE = Path(__file__).resolve().parent
VENV = HERE / "results" / "ants-venv"
REQUIREMENTS = ["antspyx==0.6.3", "scipy"]
RUNS = {
    "syn": {"type_of_transform": "SyNOnly"},
    "syn_cc": {"type_of_transform": "SyNOnly", "syn_metric": "CC", "syn_sampling": 2},
    "syn_cc_fine": {
        "type_of_transform": "SyNOnly",
        "syn_metric": "CC",
        "syn_sampling": 2,
        "reg_iterations": (40, 20, 10),
    },
}
THREADS = 2  # this machine's cores, as our runs use


def write_job(out: Path, affine: Path) -> None:
    """``out/syn/job.json`` and the low-res levels as ``.npy`` for ``syn_steps.py``."""
    from bigstream_core.io import open_image

    folder = out / "syn"
    folder.mkdir(parents=True, exist_ok=True)
    job = {"affine": str(affine), "runs": RUNS}
    for role in ("fixed", "moving"):
        level = open_image(out / f"{role}.n5", "lowres")
        np.save(folder / f"{role}.npy", np.asarray(level.to_dask().compute(), dtype=np.float32))
        job |= {role: str(folder / f"{role}.npy"), f"{role}_spacing": list(level.spacing),
                f"{role}_origin": list(level.origin)}  # fmt: skip
    (folder / "job.json").write_text(json.dumps(job, indent=1))


def accuracy(out: Path, name: str) -> dict:
    """TRE (µm), foreground NCC and field health of run ``name``'s fixed -> moving map."""
    from bigstream_core.accuracy import evaluate, foreground_ncc
    from bigstream_core.displacement import DisplacementField, jacobian_summary
    from bigstream_core.io import open_image
    from bigstream_core.phantom import GroundTruth

    images = {(role, level): open_image(out / f"{role}.n5", level)
              for role in ("fixed", "moving") for level in ("lowres", "highres")}  # fmt: skip
    low = images["fixed", "lowres"]
    field = np.load(out / "syn" / f"{name}_field.npy")
    mapping = DisplacementField(field, low.spacing, low.origin)
    truth = GroundTruth.from_json(out / "truth.json")
    tre = evaluate(mapping, truth, images["fixed", "highres"], images["moving", "highres"])
    smallest, folded = jacobian_summary(field, low.spacing)
    report = json.loads((out / "syn" / f"{name}_report.json").read_text())
    return {"tre_um": tre["mean_um"], "ncc_fg": foreground_ncc(low, images["moving", "lowres"],
                                                               mapping),
            "jacobian_min": smallest, "folded_voxels": folded,
            "self_check": report["self_check_correlation"]}  # fmt: skip


def syn_rows(out: Path, affine: Path, measure, runs=tuple(RUNS)) -> list[dict]:
    """One row per SyN run (``runs``, names in ``RUNS``) on the pair in ``out``, started from
    ``affine``: wall, CPU and peak memory of its process, and :func:`accuracy`."""
    interpreter = venv_python(VENV, REQUIREMENTS)
    write_job(out, affine)
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(THREADS)  # for the runs below
    rows = []
    for name in runs:
        wall, cpu, rss = measure([str(interpreter), str(HERE / "syn_steps.py"), str(out), name])
        rows.append({"tool": "ANTs SyN (antspyx 0.6.3)", "stage": name,
                     "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                     "peak_rss_mb": round(rss), **accuracy(out, name)})  # fmt: skip
    return rows
