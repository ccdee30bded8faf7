"""Rule `invert_field`: the regions (block cores) of a batch of transform/inverse_field.zarr,
each from the forward field."""

import json

import zarr

from bigstream_core import atomic
from bigstream_core.displacement import invert_region, open_field, write_region
from bigstream_core.tiling import node_tile
from bigstream_workflow.completion import reopen_field
from bigstream_workflow.logs import configure

log = configure(snakemake)
with open(snakemake.input.store, encoding="utf-8") as handle:
    store = json.load(handle)
with open(snakemake.input.field, encoding="utf-8") as handle:
    forward = open_field(json.load(handle)["store"])
array = zarr.open_array(store["store"], mode="r+")
reopen_field(array, snakemake.params.complete, log)  # a rerun: not finished now
manifests = []
for number, tile in enumerate(snakemake.params.tiles, start=1):
    region = node_tile(tile, forward.shrink)  # on the forward field's nodes, as the store
    inverse, report = invert_region(forward, region)
    manifests.append({**write_region(array, region, inverse), **report})
    log.info("region %d/%d %s: %s", number, len(snakemake.params.tiles), tile.id, manifests[-1])
atomic.write_json(snakemake.output[0], {"regions": manifests, "token": store["token"]})
