"""Rule `foreground_mask`: one image's foreground on its low-res grid -> masks/<image>.npy."""

import numpy as np

from bigstream_core import atomic
from bigstream_core.masks import config_mask
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure

log = configure(snakemake)
role = snakemake.wildcards.image
levels = open_config_images(snakemake.params.images)[role]
mask = config_mask(snakemake.params.images[role], levels, snakemake.params.foreground, role)
atomic.write_npy(snakemake.output[0], mask.astype(np.uint8))
log.info("%s mask %s: %.1f %% foreground", role, mask.shape, 100 * mask.mean())
