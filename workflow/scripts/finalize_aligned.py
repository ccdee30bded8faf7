"""Rule `finalize_aligned`: pyramid, OME-Zarr metadata and provenance of aligned.ome.zarr."""

import json

from bigstream_core import atomic
from bigstream_core.io import finish_ome_zarr
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure
from bigstream_workflow.provenance import provenance

log = configure(snakemake.log[0])
images = open_config_images(snakemake.params.images)
fixed = images["fixed"]["highres"]
blocks, transform = [], None
for path in snakemake.input.blocks:  # one record per batch of blocks
    with open(path, encoding="utf-8") as handle:
        record = json.load(handle)
    blocks += record["blocks"]
    transform = record["transform"]
image = finish_ome_zarr(
    snakemake.params.store, fixed.spacing, fixed.origin, snakemake.params.blocksize,
    name=snakemake.params.name, attrs={"bigstream": {"transform": transform,
                                         **provenance(snakemake.config, images)}},
)  # fmt: skip
atomic.write_json(
    snakemake.output[0],
    {"store": snakemake.params.store, "shape": list(image.shape), "blocks": blocks},
)
log.info("finished %s: %s blocks, shape %s", snakemake.params.store, len(blocks), image.shape)
