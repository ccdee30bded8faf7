"""Rule `fit_local_affine`: the affine of one low-res tile (or why it failed) -> JSON.

The tile's key points are the global stage's (the tables of the key-point tiles that meet
the tile, and where the global affine maps it in the moving image): none is detected here.
"""

import os

import pandas as pd

from bigstream_core import atomic
from bigstream_core.global_affine import strongest
from bigstream_core.keypoints import keypoint_grid
from bigstream_core.local_affine import fit_tile, keypoint_regions
from bigstream_core.masks import load_mask
from bigstream_core.tiling import tiles_meeting
from bigstream_core.transforms import read_affine
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure

log = configure(snakemake)
images = open_config_images(snakemake.params.images)
fixed, moving = images["fixed"]["lowres"], images["moving"]["lowres"]
tile, local, ga = snakemake.params.tile, snakemake.params.local, snakemake.params.keypoints
global_affine = read_affine(snakemake.input.affine)
regions = keypoint_regions(tile, fixed, moving, global_affine, local["search_radius"])
tables = []
for role, image in (("fixed", fixed), ("moving", moving)):
    grid = keypoint_grid(image.shape, ga["blocksize"], ga["min_radius"], ga["max_radius"])
    folder = snakemake.params.keypoint_tables[role]
    near = tiles_meeting(grid, *regions[role])
    tables.append(
        strongest([pd.read_parquet(os.path.join(folder, f"{t.id}.parquet")) for t in near])
    )
    log.info("%s: %d key points from %d key-point tiles", role, len(tables[-1]), len(near))
masks = (load_mask(snakemake.input.fixed_mask), load_mask(snakemake.input.moving_mask))
matrix, row = fit_tile(
    fixed, moving, global_affine, tile, tuple(tables), local, snakemake.params.seed, masks,
    snakemake.params.min_foreground,
)  # fmt: skip
atomic.write_json(
    snakemake.output[0], {"affine": None if matrix is None else matrix.tolist(), **row}
)
log.info("tile %s: %s", tile.id, row)
