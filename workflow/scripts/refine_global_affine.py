"""Rule `refine_global_affine`: the RANSAC affine refined by intensities (when enabled)
-> affine.txt, affine_xyz.txt and report.json (the RANSAC report plus a `refine` entry)."""

import json

import numpy as np

from bigstream_core import atomic
from bigstream_core.intensity_refine import RefineError, RefineParams, refine_by_intensity
from bigstream_core.masks import load_mask
from bigstream_core.transforms import read_affine, to_xyz, write_affine
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure

log = configure(snakemake)
settings = snakemake.params.refine
matrix = read_affine(snakemake.input.affine)
with open(snakemake.input.report, encoding="utf-8") as handle:
    report = json.load(handle)
if not settings["enabled"]:
    report["refine"] = {"status": "off"}
elif report.get("status") != "ok":
    report["refine"] = {"status": "skipped: the RANSAC affine failed"}
else:
    images = open_config_images(snakemake.params.images)
    masks = [load_mask(snakemake.input[f"{role}_mask"]) for role in ("fixed", "moving")]
    try:
        matrix, report["refine"] = refine_by_intensity(
            images["fixed"]["lowres"], images["moving"]["lowres"], matrix,
            RefineParams.from_config(settings), *masks, seed=snakemake.params.seed,
        )  # fmt: skip
    except RefineError as error:
        log.warning("refinement not possible, the RANSAC affine is kept: %s", error)
        report["refine"] = {"status": f"kept the initial affine: {error}"}
write_affine(snakemake.output.affine, matrix)
write_affine(snakemake.output.affine_xyz, to_xyz(matrix))
atomic.write_json(snakemake.output.report, report)
log.info("global affine (z y x, um):\n%s\nrefine: %s", np.round(matrix, 5), report["refine"])
