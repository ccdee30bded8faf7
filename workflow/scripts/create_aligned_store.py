"""Rule `create_aligned_store`: the empty output store (every channel, every pyramid level),
before the per-block jobs fill it."""

import uuid

import numpy as np

from bigstream_core import atomic
from bigstream_core.io import create_ome_zarr
from bigstream_core.tiling import block_chunks
from bigstream_workflow.config import open_config_images, open_moving_channels
from bigstream_workflow.logs import configure

log = configure(snakemake)
fixed = open_config_images(snakemake.params.images)["fixed"]["highres"]
channels = open_moving_channels(snakemake.params.images)
output, blocksize = snakemake.params.output, snakemake.params.blocksize
dtype = np.result_type(*(channel.dtype for channel in channels))  # e.g. uint8 + uint16: uint16
group = create_ome_zarr(
    snakemake.params.store, fixed.shape, dtype, block_chunks(blocksize),
    channels=len(channels), version=output["format"].removeprefix("ome-zarr-"),
    shard=tuple(blocksize) if output["shard"] else None,
)  # fmt: skip
level = group["0"]
# A new token each time the store is made anew, so every block job downstream re-runs.
atomic.write_json(
    snakemake.output[0],
    {"store": snakemake.params.store, "shape": list(level.shape), "chunks": list(level.chunks),
     "dtype": str(level.dtype), "levels": len(list(group.array_keys())),
     "token": uuid.uuid4().hex},
)  # fmt: skip
log.info("created %s: %s %s in chunks %s (shards %s)", snakemake.params.store, level.shape,
         level.dtype, level.chunks, level.shards)  # fmt: skip
