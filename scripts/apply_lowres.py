"""Rules `apply_global_affine`, `apply_local_affines_lowres`: the low-res moving image
in the fixed grid under the transform so far, as OME-Zarr (for inspection)."""

from bigstream_core import atomic
from bigstream_core.config import open_config_images
from bigstream_core.full_transform import from_inputs
from bigstream_core.io import write_ome_zarr
from bigstream_core.logs import configure
from bigstream_core.provenance import provenance
from bigstream_core.resample import resample

log = configure(snakemake.log[0])
images = open_config_images(snakemake.params.images)
fixed, moving = images["fixed"]["lowres"], images["moving"]["lowres"]
transform, description = from_inputs(list(snakemake.input))
aligned = resample(moving, transform, fixed.shape, fixed.spacing, fixed.origin)
with atomic.atomic_directory(snakemake.output[0]) as store:
    write_ome_zarr(
        store, aligned, fixed.spacing, origin=fixed.origin, name=f"moving_lowres ({description})",
        attrs={"bigstream": {"transform": description, **provenance(snakemake.config, images)}},
    )  # fmt: skip
log.info("wrote %s (%s, %s)", snakemake.output[0], fixed.shape, moving.dtype)
