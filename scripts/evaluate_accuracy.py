"""Rule `evaluate_accuracy`: TRE of the registration so far against the known transform."""

from bigstream_core import atomic
from bigstream_core.accuracy import evaluate
from bigstream_core.config import open_config_images
from bigstream_core.logs import configure
from bigstream_core.phantom import GroundTruth
from bigstream_core.transforms import compose_files

log = configure(snakemake.log[0])
images = open_config_images(snakemake.params.config)
truth = GroundTruth.from_json(snakemake.input.truth)
estimate, description = compose_files([snakemake.input.transforms])
report = evaluate(estimate, truth, images["fixed"]["highres"], images["moving"]["highres"])
report["transform"] = description
atomic.write_json(snakemake.output[0], report)
log.info("accuracy of %s: %s", description, report)
