"""Rule `finish_field`: mark a field Zarr complete (provenance, region manifests)."""

import json

import zarr

from bigstream_core import atomic
from bigstream_core.displacement import round_trip_summary
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure
from bigstream_workflow.provenance import provenance

log = configure(snakemake)
with open(snakemake.input.store, encoding="utf-8") as handle:
    store = json.load(handle)
regions = []
for path in snakemake.input.regions:  # one record per batch of regions
    with open(path, encoding="utf-8") as handle:
        regions += json.load(handle)["regions"]
array = zarr.open_array(store["store"], mode="r+")
images = open_config_images(snakemake.params.images)
array.attrs.update({"complete": True, "bigstream": provenance(snakemake.config, images)})
summary = {
    "max_um": max(region["max_um"] for region in regions),
    "jacobian_min": min(region["jacobian_min"] for region in regions),
    "folded_voxels": sum(region["folded_voxels"] for region in regions),
}
if all("round_trip_voxels" in region for region in regions):  # the inverse field
    summary |= round_trip_summary(regions)
atomic.write_json(snakemake.output[0], {**store, **summary, "regions": regions})
log.info("finished %s, %d regions: %s", store["store"], len(regions), summary)
