"""Rule `deform_block`: deformable registration of one overlapping high-res block."""

from bigstream_core import atomic
from bigstream_core.config import open_config_images
from bigstream_core.deform import DeformParams, register_tile
from bigstream_core.full_transform import from_inputs
from bigstream_core.logs import configure

log = configure(snakemake.log[0])
images = open_config_images(snakemake.params.images)
transform, description = from_inputs(list(snakemake.input.transforms))
tile = snakemake.params.tile
field, report = register_tile(
    images["fixed"]["highres"], images["moving"]["highres"], transform, tile,
    DeformParams.from_config(snakemake.params.deform),
)  # fmt: skip
atomic.write_npy(snakemake.output.field, field)
atomic.write_json(snakemake.output.report, {**report, "halo": [list(b) for b in tile.halo]})
log.info("block %s on top of %s: %s", tile.id, description, report)
