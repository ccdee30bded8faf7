"""The low-res moving image in the fixed grid under the transform so far, as OME-Zarr: what
rules ``apply_global_affine`` and ``apply_local_affines_lowres`` write (for inspection and
the QC report's overlays)."""

from __future__ import annotations

import logging

import dask

from bigstream_core import atomic
from bigstream_core.io import write_ome_zarr
from bigstream_core.resample import resample
from bigstream_workflow.config import open_config_images
from bigstream_workflow.provenance import provenance
from bigstream_workflow.transform_files import from_inputs


def write_lowres_view(images_config: dict, transform_files: list[str], store: str,
                      config: dict, log: logging.Logger, threads: int) -> None:  # fmt: skip
    """Resample the moving image's low-res level through the stages in ``transform_files``
    onto the fixed low-res grid (z y x, µm) and write it to ``store`` (all or nothing), on
    ``threads`` threads (the job's, not the node's cores)."""
    images = open_config_images(images_config)
    fixed, moving = images["fixed"]["lowres"], images["moving"]["lowres"]
    transform, description = from_inputs(transform_files)
    aligned = resample(moving, transform, fixed.shape, fixed.spacing, fixed.origin)
    with atomic.atomic_directory(store) as path, dask.config.set(num_workers=threads):
        write_ome_zarr(
            path, aligned, fixed.spacing, origin=fixed.origin,
            name=f"moving_lowres ({description})",
            attrs={"bigstream": {"transform": description, **provenance(config, images)}},
        )  # fmt: skip
    log.info("wrote %s (%s, %s)", store, fixed.shape, moving.dtype)
