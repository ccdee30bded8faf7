"""Rule `evaluate_accuracy`: accuracy of each stage so far against the known transform (the
NCC added up from the NCC jobs' partial sums)."""

import json

from bigstream_core import atomic
from bigstream_core.accuracy import reduce_ncc_records, stage_accuracy
from bigstream_core.phantom import GroundTruth
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure
from bigstream_workflow.transform_files import from_inputs


def load(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


log = configure(snakemake)
images = open_config_images(snakemake.params.config)
truth = GroundTruth.from_json(snakemake.input.truth)
files = list(snakemake.input.transforms)
stages = [from_inputs(files[:count])[::-1] for count in range(1, len(files) + 1)]
ncc = None  # a level of one batch: stage_accuracy sums it here (foreground_ncc)
if snakemake.input.ncc:
    records = [load(path) for path in snakemake.input.ncc]
    level = load(snakemake.input.level)["level"]
    ncc = reduce_ncc_records(records, level, snakemake.params.blocks)
report = stage_accuracy(stages, truth, images, ncc)
atomic.write_json(snakemake.output[0], report)
for row in report["stages"]:
    log.info("%s: TRE mean %.3f um, NCC %.4f", row["transform"], row["mean_um"], row["ncc_fg"])
