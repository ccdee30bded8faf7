"""Rule `downsample_aligned`: a batch of blocks of one level of aligned.ome.zarr's pyramid,
each the 2x mean of the level below (every channel)."""

import json

from bigstream_core import atomic
from bigstream_core.io import downsample_level
from bigstream_workflow.completion import reopen_ome_zarr
from bigstream_workflow.logs import configure

log = configure(snakemake)
with open(snakemake.input.store, encoding="utf-8") as handle:
    store = json.load(handle)
reopen_ome_zarr(store["store"], snakemake.params.complete, log)  # a rerun: not finished now
level, tiles = int(snakemake.wildcards.level), snakemake.params.tiles
for number, tile in enumerate(tiles, start=1):
    downsample_level(store["store"], level, tile.core)
    log.info("level %d block %d/%d %s: %s", level, number, len(tiles), tile.id, tile.core)
atomic.write_json(
    snakemake.output[0],
    {"level": level, "blocks": [tile.id for tile in tiles], "token": store["token"]},
)
