"""Rule `stitch_field`: the regions (block cores) of a batch of transform/field.zarr, each
blended from the fields of its block and the blocks around it at the store's nodes."""

import json

import numpy as np
import zarr

from bigstream_core import atomic
from bigstream_core.displacement import stitch_region, write_region
from bigstream_core.tiling import neighbours, node_tile, overlap_voxels
from bigstream_workflow.completion import reopen_field
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure

log = configure(snakemake)
with open(snakemake.input.store, encoding="utf-8") as handle:
    store = json.load(handle)
array = zarr.open_array(store["store"], mode="r+")
reopen_field(array, snakemake.params.complete, log)  # a rerun: not finished now
fixed = open_config_images(snakemake.params.images)["fixed"]["highres"]
deform = snakemake.params.deform
blocks = snakemake.params.blocks  # the batch's blocks and those next to them: id -> (tile, file)
grid = {name: tile for name, (tile, _) in blocks.items()}
tiles = snakemake.params.tiles
manifests = []
for number, tile in enumerate(tiles, start=1):
    field = stitch_region(
        tile, neighbours(tile, grid), fixed.shape, deform["blocksize"],
        overlap_voxels(deform["blocksize"], deform["overlap"]),
        lambda block: np.load(blocks[block.id][1], mmap_mode="r"), deform["shrink_factors"][-1],
        store["shrink"],
    )  # fmt: skip
    manifests.append(write_region(array, node_tile(tile, store["shrink"]), field))
    log.info("region %d/%d %s: %s", number, len(tiles), tile.id, manifests[-1])
atomic.write_json(snakemake.output[0], {"regions": manifests, "token": store["token"]})
