"""Rule `plan`: record both images' metadata and the tile grid of every stage."""

from pathlib import Path

from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure
from bigstream_workflow.plan import stage_grids, write_plan

log = configure(snakemake)
config = snakemake.params.config
images = open_config_images(config)
grids = stage_grids(config, images)
nonfinite = {role: images[role]["lowres"].count_nonfinite() for role in images}
for role, count in nonfinite.items():
    if count:
        log.warning("%s low-res level: %d NaN or infinite voxels, read as background (0)",
                    role, count)  # fmt: skip
write_plan(Path(snakemake.output.images).parent, config, images, grids, nonfinite)
log.info("plan written: %s", {name: len(tiles) for name, tiles in grids.items()})
