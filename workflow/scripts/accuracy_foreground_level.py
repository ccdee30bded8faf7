"""Rule `accuracy_foreground_level`: the fixed low-res foreground's level (Otsu on a strided
sample), which every NCC job of the accuracy uses."""

from bigstream_core import atomic
from bigstream_core.accuracy import foreground_level
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure

log = configure(snakemake)
fixed = open_config_images(snakemake.params.images)["fixed"]["lowres"]
level = foreground_level(fixed)
atomic.write_json(snakemake.output[0], {"level": level})
log.info("fixed low-res foreground: above %r", level)
