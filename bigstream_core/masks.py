"""Foreground masks: from a file of any level of the image, or made from the image itself.

A mask is a boolean array on an image's voxel grid (z, y, x): True where there is tissue.
Masks given by the user are label or binary images (nonzero = foreground) of any level of
the image they belong to; they are placed by extent (mask voxel ``j`` covers the image's
physical box from ``j / n`` to ``(j + 1) / n`` of its length along each axis, whatever
its metadata says) and looked up by nearest voxel. The automatic mask thresholds the image
smoothed by a Gaussian of ``smooth_um`` µm, at Otsu's threshold or at a percentile.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from bigstream_core.io import Image, open_image

AUTO_METHODS = ("none", "otsu", "percentile")


class MaskError(ValueError):
    """A mask that cannot be used: the message names it, what was found and what was expected."""


def check_mask(mask: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``mask`` as a boolean array of ``shape`` (z, y, x); MaskError if its shape differs or
    it has no foreground voxel. ``name`` says which mask in the message."""
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise MaskError(
            f"{name} has shape {mask.shape}; expected the image's shape {tuple(shape)} (z, y, x)"
        )
    mask = mask != 0
    if not mask.any():
        raise MaskError(f"{name} of shape {mask.shape} is empty (no nonzero voxel)")
    return mask


def level_factors(image_shape, mask_shape, name: str) -> np.ndarray:
    """The whole factors ``f`` (z, y, x) with ``mask_shape == image_shape / f`` (rounded
    either way): the level of the image the mask was drawn on. MaskError if there are none."""
    image_shape, mask_shape = np.asarray(image_shape), np.asarray(mask_shape)
    if len(mask_shape) != 3:
        raise MaskError(f"{name} is {len(mask_shape)}D (shape {tuple(mask_shape)}); expected 3D")
    factors = np.maximum(np.rint(image_shape / mask_shape), 1).astype(int)
    fits = np.abs(mask_shape * factors - image_shape) < factors
    if not fits.all():
        raise MaskError(
            f"{name} has shape {tuple(int(n) for n in mask_shape)}, which is not the image's "
            f"shape {tuple(int(n) for n in image_shape)} divided by a whole factor per axis; "
            "expected a mask drawn on one of the image's levels"
        )
    return factors


def mask_on_grid(mask: Image, image_shape, target: Image, name: str) -> np.ndarray:
    """The ``mask`` (drawn on a level of an image whose finest level has ``image_shape``
    voxels) on ``target``'s voxel grid (a level of the same image), by nearest voxel.

    Levels are placed by their whole factors (:func:`level_factors`): level voxel ``i``
    covers finest voxels ``[i f, (i + 1) f)``. Reads ``mask`` one plane at a time."""
    mask_factors = level_factors(image_shape, mask.shape, name)
    target_factors = level_factors(image_shape, target.shape, "the target level")
    index = [
        np.clip(((np.arange(n) + 0.5) * t // m).astype(int), 0, size - 1)
        for n, t, m, size in zip(target.shape, target_factors, mask_factors, mask.shape,
                                 strict=True)
    ]  # fmt: skip
    out = np.empty(target.shape, dtype=bool)
    rows = slice(int(index[1][0]), int(index[1][-1]) + 1)
    cols = slice(int(index[2][0]), int(index[2][-1]) + 1)
    for z, zi in enumerate(index[0]):
        plane = mask.read((slice(int(zi), int(zi) + 1), rows, cols))[0]
        out[z] = plane[np.ix_(index[1] - rows.start, index[2] - cols.start)] != 0
    if not out.any():
        raise MaskError(f"{name} of shape {mask.shape} is empty (no nonzero voxel)")
    return out


def foreground_mask(
    data: np.ndarray, spacing, method: str = "otsu", percentile: float = 50.0,
    smooth_um: float = 4.0,
) -> np.ndarray:  # fmt: skip
    """Foreground of ``data`` (z, y, x; ``spacing`` µm): the image smoothed by a Gaussian of
    ``smooth_um`` µm, above Otsu's threshold (``method="otsu"``) or above its
    ``percentile``-th percentile (``method="percentile"``)."""
    if method not in AUTO_METHODS[1:]:
        raise MaskError(f"foreground method {method!r}: expected one of {AUTO_METHODS[1:]}")
    sigma = smooth_um / np.asarray(spacing, dtype=float)
    smooth = ndimage.gaussian_filter(data.astype(np.float32), sigma, mode="nearest")
    if np.ptp(smooth) == 0:
        raise MaskError("the image is constant: no foreground can be told from background")
    if method == "otsu":
        level = threshold_otsu(smooth[tuple(slice(None, None, 2) for _ in range(3))])
    else:
        level = np.percentile(smooth, percentile)
    return smooth > level


def config_mask(entry: dict, levels: dict[str, Image], foreground: dict, role: str) -> np.ndarray:
    """One image's mask on its low-res grid, as the config asks: its ``mask`` file when the
    image ``entry`` has one, else the automatic mask of ``foreground`` (the config block)."""
    lowres = levels["lowres"]
    if entry.get("mask"):
        mask = entry["mask"]
        found = open_image(mask["path"], mask.get("dataset") or None, spacing=(1.0, 1.0, 1.0))
        name = f"{role}.mask ({mask['path']}, dataset {mask.get('dataset')!r})"
        return mask_on_grid(found, levels["highres"].shape, lowres, name)
    data = lowres.read((slice(None),) * 3)
    return foreground_mask(
        data, lowres.spacing, foreground["auto"], foreground["percentile"], foreground["smooth_um"]
    )


def load_mask(paths: list[str]) -> np.ndarray | None:
    """A saved mask (``.npy``, uint8 0/1 on the low-res grid), memory-mapped, from a list of
    at most one path (None for an empty list: no mask)."""
    return np.load(paths[0], mmap_mode="r") if paths else None
