"""The tutorial-style Python API: whole steps on arrays, for notebooks.

The names and parameters follow the bigstream tutorial. Images may be numpy
arrays (with their spacing) or :class:`bigstream_core.io.Image` handles opened
with :func:`bigstream_core.io.open_image`. Axis order z, y, x; spacing in µm;
the affine maps fixed points to moving points (``aligned(x) = moving(A x)``).

Example::

    from bigstream_core.api import ransac_affine, apply_global_affine
    affine = ransac_affine(fix, mov, fix_spacing, mov_spacing,
                           min_radius=6, max_radius=20, match_threshold=0.75)
    aligned = apply_global_affine(fix, mov, fix_spacing, mov_spacing, affine)
"""

from __future__ import annotations

import numpy as np

from bigstream_core.global_affine import fit_global_affine, image_keypoints, match_images
from bigstream_core.io import Image, array_image
from bigstream_core.resample import resample
from bigstream_core.transforms import affine_map


def as_image(data, spacing, origin=(0.0, 0.0, 0.0)) -> Image:
    """``data`` as an :class:`Image`: an Image is returned as is, an array is wrapped."""
    if isinstance(data, Image):
        return data
    return array_image(np.asarray(data), spacing, origin)


def ransac_affine(
    fix,
    mov,
    fix_spacing,
    mov_spacing,
    min_radius: float,
    max_radius: float,
    match_threshold: float,
    cc_radius: int = 12,
    nspots: int = 5000,
    align_threshold: float = 2.0,
    num_sigma_max: int = 10,
    blocksize=(256, 256, 256),
    seed: int = 0,
    return_report: bool = False,
):
    """Global affine (4x4, fixed -> moving, µm, z y x) from blob key points.

    ``fix``/``mov``: 3D arrays (z, y, x) or Images; ``*_spacing``: z, y, x µm
    (ignored for Images, which carry their own). Radii and ``cc_radius`` in
    voxels; ``align_threshold`` in µm. With ``return_report=True`` returns
    ``(affine, report)`` with the point, match and inlier counts and timings.
    Key points are found in tiles of ``blocksize`` voxels, one thread per core;
    memory grows with the tile (about 30 bytes per voxel per thread), not the image.
    Raises :class:`bigstream_core.global_affine.GlobalAffineError` with the
    counts when too few points or matches are found, or the fit is degenerate.

    Example: ``ransac_affine(fix, mov, (1.68, 1.84, 1.84), (1.68, 1.84, 1.84),
    min_radius=6, max_radius=20, match_threshold=0.75)``.
    """
    if nspots < 1:
        raise ValueError(f"nspots = {nspots}: expected at least 1 key point per image")
    fixed, moving = as_image(fix, fix_spacing), as_image(mov, mov_spacing)
    points = [
        image_keypoints(image, min_radius, max_radius, num_sigma_max, nspots, cc_radius, blocksize)
        for image in (fixed, moving)
    ]
    matches, report = match_images(
        fixed, points[0], moving, points[1], cc_radius, match_threshold, align_threshold, seed
    )
    affine, fit = fit_global_affine(matches, align_threshold, seed)
    report.update(fit)
    return (affine, report) if return_report else affine


def apply_global_affine(fix, mov, fix_spacing, mov_spacing, affine, order: int = 1) -> np.ndarray:
    """The moving image resampled into the fixed grid through ``affine`` (numpy, moving dtype).

    ``fix`` gives only the output grid (its shape, spacing and origin); voxels
    mapping outside the moving image are 0. Example:
    ``aligned = apply_global_affine(fix, mov, fix_spacing, mov_spacing, affine)``.
    """
    fixed, moving = as_image(fix, fix_spacing), as_image(mov, mov_spacing)
    lazy = resample(moving, affine_map(affine), fixed.shape, fixed.spacing, fixed.origin, order)
    return lazy.compute()
