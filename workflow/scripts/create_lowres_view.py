"""Rule `create_lowres_view`: a view's empty store (every pyramid level), before the jobs of
its blocks fill it (a low-res level of more than one batch)."""

import uuid

from bigstream_core import atomic
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure
from bigstream_workflow.lowres_view import create_view

log = configure(snakemake)
images = open_config_images(snakemake.params.images)
fixed = images["fixed"]["lowres"]
group = create_view(snakemake.params.store, fixed, images["moving"]["lowres"])
levels = len(list(group.array_keys()))
# A new token each time the store is made anew, so every block job downstream re-runs.
atomic.write_json(
    snakemake.output[0],
    {"store": snakemake.params.store, "shape": list(fixed.shape), "levels": levels,
     "token": uuid.uuid4().hex},
)  # fmt: skip
log.info("created %s: %s, %d levels", snakemake.params.store, fixed.shape, levels)
