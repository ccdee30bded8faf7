"""Rule `lowres_view_block`: a batch of a view's blocks, one after the other, through the
view's transform into levels 0 and 1 of its store."""

import json

from bigstream_core import atomic
from bigstream_workflow.completion import reopen_ome_zarr
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure
from bigstream_workflow.lowres_view import write_view_blocks
from bigstream_workflow.transform_files import from_inputs

log = configure(snakemake)
images = open_config_images(snakemake.params.images)
with open(snakemake.input.store, encoding="utf-8") as handle:
    store = json.load(handle)
reopen_ome_zarr(store["store"], snakemake.params.complete, log)  # a rerun: not finished now
transform, description = from_inputs(list(snakemake.input.transforms))
blocks = write_view_blocks(store["store"], images["fixed"]["lowres"], images["moving"]["lowres"],
                           transform, snakemake.params.tiles, log)  # fmt: skip
atomic.write_json(
    snakemake.output[0], {"blocks": blocks, "transform": description, "token": store["token"]}
)
