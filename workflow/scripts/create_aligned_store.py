"""Rule `create_aligned_store`: the empty output store, before the per-block jobs fill it."""

import uuid

from bigstream_core import atomic
from bigstream_core.io import create_ome_zarr
from bigstream_core.tiling import block_chunks
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure

log = configure(snakemake.log[0])
images = open_config_images(snakemake.params.images)
fixed, moving = images["fixed"]["highres"], images["moving"]["highres"]
level = create_ome_zarr(
    snakemake.params.store, fixed.shape, moving.dtype, block_chunks(snakemake.params.blocksize)
)
# A new token each time the store is made anew, so every block job downstream re-runs.
atomic.write_json(
    snakemake.output[0],
    {"store": snakemake.params.store, "shape": list(level.shape), "chunks": list(level.chunks),
     "dtype": str(level.dtype), "token": uuid.uuid4().hex},
)  # fmt: skip
log.info(
    "created %s: %s %s in chunks %s", snakemake.params.store, level.shape, level.dtype, level.chunks
)
