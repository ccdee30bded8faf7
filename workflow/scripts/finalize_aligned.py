"""Rule `finalize_aligned`: the OME-Zarr metadata (multiscales, omero channels with contrast
limits from the data) and provenance of aligned.ome.zarr, once every level is filled."""

import json

from bigstream_core import atomic
from bigstream_core.io import finish_ome_zarr
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure
from bigstream_workflow.provenance import provenance

log = configure(snakemake)
images = open_config_images(snakemake.params.images)
fixed = images["fixed"]["highres"]
with open(snakemake.input.store, encoding="utf-8") as handle:
    store = json.load(handle)
blocks, transform = [], None
for path in snakemake.input.records:  # resample batches ("blocks"), then the pyramid's
    with open(path, encoding="utf-8") as handle:
        record = json.load(handle)
    if "transform" in record:
        blocks += record["blocks"]
        transform = record["transform"]
image = finish_ome_zarr(
    store["store"], fixed.spacing, fixed.origin, name="aligned", labels=snakemake.params.labels,
    attrs={"bigstream": {"transform": transform, **provenance(snakemake.config, images)}},
)  # fmt: skip
atomic.write_json(
    snakemake.output[0],
    {"store": store["store"], "shape": store["shape"], "channels": snakemake.params.labels,
     "levels": store["levels"], "blocks": blocks},
)  # fmt: skip
log.info("finished %s: %s blocks, shape %s, channels %s", store["store"], len(blocks),
         store["shape"], snakemake.params.labels)  # fmt: skip
