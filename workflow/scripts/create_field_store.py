"""Rule `create_field_store`: the empty field Zarr (forward or inverse), before the
per-region jobs fill it."""

import uuid

from bigstream_core import atomic
from bigstream_core.displacement import CONVENTION, INVERSE_CONVENTION, create_store, node_grid
from bigstream_core.tiling import block_chunks
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure

log = configure(snakemake)
fixed = open_config_images(snakemake.params.images)["fixed"]["highres"]
inverse = snakemake.wildcards.name == "inverse_field"
shrink = snakemake.params.shrink  # a node every shrink-th high-res voxel
shape, spacing = node_grid(fixed.shape, fixed.spacing, shrink)
array = create_store(
    snakemake.params.store, shape, spacing, fixed.origin,
    block_chunks([size // shrink for size in snakemake.params.blocksize]),
    INVERSE_CONVENTION if inverse else CONVENTION, shrink,
)  # fmt: skip
# A new token each time the store is made anew, so every region job downstream re-runs.
atomic.write_json(
    snakemake.output[0],
    {"store": snakemake.params.store, "shape": list(array.shape), "chunks": list(array.chunks),
     "shrink": shrink, "inverse": inverse, "token": uuid.uuid4().hex},
)  # fmt: skip
log.info("created %s: %s in chunks %s", snakemake.params.store, array.shape, array.chunks)
