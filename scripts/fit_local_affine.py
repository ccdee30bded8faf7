"""Rule `fit_local_affine`: the affine of one low-res tile (or why it failed) -> JSON."""

from bigstream_core import atomic
from bigstream_core.config import open_config_images
from bigstream_core.local_affine import fit_tile
from bigstream_core.logs import configure
from bigstream_core.masks import load_mask
from bigstream_core.transforms import read_affine

log = configure(snakemake.log[0])
images = open_config_images(snakemake.params.images)
tile = snakemake.params.tile
masks = (load_mask(snakemake.input.fixed_mask), load_mask(snakemake.input.moving_mask))
matrix, row = fit_tile(
    images["fixed"]["lowres"], images["moving"]["lowres"], read_affine(snakemake.input.affine),
    tile, snakemake.params.local, snakemake.params.seed, masks,
    snakemake.params.min_foreground,
)  # fmt: skip
atomic.write_json(
    snakemake.output[0], {"affine": None if matrix is None else matrix.tolist(), **row}
)
log.info("tile %s: %s", tile.id, row)
