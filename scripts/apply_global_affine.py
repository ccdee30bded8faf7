"""Rule `apply_global_affine`: the low-res moving image in the fixed grid, as OME-Zarr."""

from bigstream_core import atomic
from bigstream_core.config import open_config_images
from bigstream_core.io import write_ome_zarr
from bigstream_core.logs import configure
from bigstream_core.provenance import provenance
from bigstream_core.resample import resample
from bigstream_core.transforms import affine_map, read_affine

log = configure(snakemake.log[0])
images = open_config_images(snakemake.params.images)
fixed, moving = images["fixed"]["lowres"], images["moving"]["lowres"]
matrix = read_affine(snakemake.input.affine)
aligned = resample(moving, affine_map(matrix), fixed.shape, fixed.spacing, fixed.origin)
with atomic.atomic_directory(snakemake.output[0]) as store:
    write_ome_zarr(
        store, aligned, fixed.spacing, origin=fixed.origin, name="moving_lowres_global_affine",
        attrs={"bigstream": {"transform": "global affine", **provenance(snakemake.config)}},
    )  # fmt: skip
log.info("wrote %s (%s, %s)", snakemake.output[0], fixed.shape, moving.dtype)
