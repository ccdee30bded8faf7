"""Rule `detect_keypoints`: LoG blobs of one low-res tile of one image -> Parquet (µm).

Every blob above the tile's noise is kept: the global fit takes its `nspots` strongest of
all tiles, and the local stage each of its tiles' strongest from the same tables."""

from bigstream_core import atomic
from bigstream_core.keypoints import tile_keypoints
from bigstream_core.masks import load_mask
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure

log = configure(snakemake)
role, tile, ga = snakemake.wildcards.image, snakemake.params.tile, snakemake.params.keypoints
image = open_config_images(snakemake.params.images)[role]["lowres"]
points = tile_keypoints(
    image, tile, ga["min_radius"], ga["max_radius"], ga["num_sigma_max"], ga["cc_radius"],
    mask=load_mask(snakemake.input.mask),
)  # fmt: skip
atomic.write_table(snakemake.output[0], points)
log.info("%s tile %s (halo %s): %d key points", role, tile.id, tile.halo, len(points))
