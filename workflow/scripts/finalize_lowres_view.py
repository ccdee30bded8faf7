"""Rule `finalize_lowres_view`: a view made complete, its coarser levels and OME metadata
written once every block is there; for a low-res level of one batch, the whole view in
this one job (store, blocks, then the same)."""

import json

from bigstream_core import atomic
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure
from bigstream_workflow.lowres_view import create_view, finish_view, write_view_blocks
from bigstream_workflow.provenance import provenance
from bigstream_workflow.transform_files import from_inputs

log = configure(snakemake)
images = open_config_images(snakemake.params.images)
fixed, moving = images["fixed"]["lowres"], images["moving"]["lowres"]
store = snakemake.params.store
transform, description = from_inputs(list(snakemake.input.transforms))
blocks = []
for path in snakemake.input.blocks:  # the block jobs' records (none: one batch, done here)
    with open(path, encoding="utf-8") as handle:
        blocks += json.load(handle)["blocks"]
if not snakemake.input.blocks:
    create_view(store, fixed, moving)
    blocks = write_view_blocks(store, fixed, moving, transform, snakemake.params.tiles, log)
attrs = {"bigstream": {"transform": description, **provenance(snakemake.config, images)}}
levels = finish_view(store, fixed, description, attrs)
atomic.write_json(
    snakemake.output[0],
    {"store": store, "shape": list(fixed.shape), "levels": levels, "blocks": len(blocks),
     "transform": description},
)  # fmt: skip
log.info("finished %s: %d blocks, shape %s, %d levels (%s)", store, len(blocks), fixed.shape,
         levels, description)  # fmt: skip
