"""Rule `fit_global_affine`: RANSAC affine of the matches -> ransac_affine.txt, ransac_report."""

import json

import numpy as np
import pandas as pd

from bigstream_core import atomic
from bigstream_core.global_affine import GlobalAffineError, fit_global_affine
from bigstream_core.transforms import write_affine
from bigstream_workflow.logs import configure

log = configure(snakemake)
ga = snakemake.params.keypoints
with open(snakemake.input.info, encoding="utf-8") as handle:
    report = json.load(handle)
try:
    if "error" in report:
        raise GlobalAffineError(report["error"])
    matrix, fit = fit_global_affine(
        pd.read_parquet(snakemake.input.matches), ga["align_threshold"], snakemake.params.seed
    )
    report.update(fit, status="ok")
except GlobalAffineError as error:
    if ga["on_failure"] != "identity":
        raise
    log.warning("%s; global_affine.on_failure = identity: writing the identity", error)
    matrix = np.eye(4)
    report.update(status="failed, identity used", error=str(error))
report["keypoints_s"] = {
    role: round(sum(pd.read_csv(path, sep="\t")["s"].sum() for path in snakemake.input[role]), 3)
    for role in ("fixed_benchmarks", "moving_benchmarks")
}
write_affine(snakemake.output.affine, matrix)
atomic.write_json(snakemake.output.report, report)
log.info("global affine (z y x, um):\n%s\nreport: %s", np.round(matrix, 5), report)
