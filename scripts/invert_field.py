"""Rule `invert_field`: one region of transform/inverse_field.zarr from the forward field."""

import json

import zarr

from bigstream_core import atomic
from bigstream_core.displacement import invert_region, open_field, write_region
from bigstream_core.logs import configure

log = configure(snakemake.log[0])
with open(snakemake.input.store, encoding="utf-8") as handle:
    store = json.load(handle)
with open(snakemake.input.field, encoding="utf-8") as handle:
    forward = open_field(json.load(handle)["store"])
inverse, report = invert_region(forward, snakemake.params.tile)
manifest = write_region(zarr.open_array(store["store"], mode="r+"), snakemake.params.tile, inverse)
atomic.write_json(snakemake.output[0], {**manifest, **report, "token": store["token"]})
log.info("region %s: %s", snakemake.params.tile.id, manifest)
