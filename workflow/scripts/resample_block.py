"""Rule `resample_block`: a batch of output blocks, one after the other, each through the
full transform into its chunks, every channel of the moving round."""

import json

from bigstream_core import atomic
from bigstream_core.resample import resample_block
from bigstream_workflow.completion import reopen_ome_zarr
from bigstream_workflow.config import open_config_images, open_moving_channels
from bigstream_workflow.logs import configure
from bigstream_workflow.transform_files import from_inputs

log = configure(snakemake)
fixed = open_config_images(snakemake.params.images)["fixed"]["highres"]
channels = open_moving_channels(snakemake.params.images)
with open(snakemake.input.store, encoding="utf-8") as handle:
    store = json.load(handle)
reopen_ome_zarr(store["store"], snakemake.params.complete, log)  # a rerun: not finished now
transform, description = from_inputs(list(snakemake.input.transforms))
tiles = snakemake.params.tiles
manifests = []
for number, tile in enumerate(tiles, start=1):
    manifests.append(resample_block(
        store["store"], channels, fixed, transform, tile, snakemake.params.order,
        snakemake.params.transform_step,
    ))  # fmt: skip
    log.info("block %d/%d %s: %s", number, len(tiles), tile.id, manifests[-1])
atomic.write_json(
    snakemake.output[0], {"blocks": manifests, "transform": description, "token": store["token"]}
)
