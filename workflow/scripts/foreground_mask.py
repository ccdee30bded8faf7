"""Rule `foreground_mask`: one image's foreground on its low-res grid -> masks/<image>.npy
(written block by block)."""

from bigstream_core.masks import write_config_mask
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure

log = configure(snakemake)
role = snakemake.wildcards.image
levels = open_config_images(snakemake.params.images)[role]
fraction = write_config_mask(
    snakemake.output[0], snakemake.params.images[role], levels, snakemake.params.foreground, role
)
log.info("%s mask %s: %.1f %% foreground", role, levels["lowres"].shape, 100 * fraction)
