"""Rule `stitch_field`: one region of transform/field.zarr, blended from the block fields."""

import json

import numpy as np
import zarr

from bigstream_core import atomic
from bigstream_core.config import open_config_images
from bigstream_core.displacement import stitch_region, write_region
from bigstream_core.logs import configure
from bigstream_core.tiling import overlap_voxels

log = configure(snakemake.log[0])
with open(snakemake.input.store, encoding="utf-8") as handle:
    store = json.load(handle)
fixed = open_config_images(snakemake.params.images)["fixed"]["highres"]
deform = snakemake.params.deform
neighbours = snakemake.params.neighbours
files = dict(zip((tile.id for tile in neighbours), snakemake.input.blocks, strict=True))
field = stitch_region(
    snakemake.params.tile, neighbours, fixed.shape, deform["blocksize"],
    overlap_voxels(deform["blocksize"], deform["overlap"]),
    lambda tile: np.load(files[tile.id], mmap_mode="r"), deform["shrink_factors"][-1],
)  # fmt: skip
manifest = write_region(zarr.open_array(store["store"], mode="r+"), snakemake.params.tile, field)
atomic.write_json(snakemake.output[0], {**manifest, "token": store["token"]})
log.info("region %s: %s", snakemake.params.tile.id, manifest)
