"""Foreground masks: from a file of any level of the image, or made from the image itself.

A mask is a boolean array on an image's voxel grid (z, y, x): True where there is tissue.
Masks given by the user are label or binary images (nonzero = foreground) of any level of
the image they belong to; they are placed by extent (mask voxel ``j`` covers the image's
physical box from ``j / n`` to ``(j + 1) / n`` of its length along each axis, whatever
its metadata says) and looked up by nearest voxel. The automatic mask thresholds the image
smoothed by a Gaussian of ``smooth_um`` µm, at Otsu's threshold or at a percentile of a
strided sample of the smoothed voxels, block by block. Masks are written to ``.npy`` block by
block (or plane by plane), never held whole.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from bigstream_core import atomic
from bigstream_core.io import Image, array_image, open_image

AUTO_METHODS = ("none", "otsu", "percentile")
BLOCK = 128  # voxels: edge of the blocks the automatic mask is made in
SAMPLE_VOXELS = 2_000_000  # most smoothed voxels the automatic threshold is found on


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


def mask_on_grid(mask: Image, image_shape, target: Image, name: str, write) -> float:
    """Write the ``mask`` (drawn on a level of an image whose finest level has
    ``image_shape`` voxels) on ``target``'s voxel grid (a level of the same image), by
    nearest voxel, one z plane at a time through ``write(region, plane)`` (as
    :func:`bigstream_core.atomic.npy_blocks` gives); returns its foreground fraction.

    Levels are placed by their whole factors (:func:`level_factors`): level voxel ``i``
    covers finest voxels ``[i f, (i + 1) f)``. Memory: a plane of each. MaskError if empty."""
    mask_factors = level_factors(image_shape, mask.shape, name)
    target_factors = level_factors(image_shape, target.shape, "the target level")
    index = [
        np.clip(((np.arange(n) + 0.5) * t // m).astype(int), 0, size - 1)
        for n, t, m, size in zip(target.shape, target_factors, mask_factors, mask.shape,
                                 strict=True)
    ]  # fmt: skip
    rows = slice(int(index[1][0]), int(index[1][-1]) + 1)
    cols = slice(int(index[2][0]), int(index[2][-1]) + 1)
    found = 0
    for z, zi in enumerate(index[0]):
        plane = mask.read((slice(int(zi), int(zi) + 1), rows, cols))[0]
        plane = plane[np.ix_(index[1] - rows.start, index[2] - cols.start)] != 0
        write((slice(z, z + 1), slice(0, target.shape[1]), slice(0, target.shape[2])), plane[None])
        found += int(plane.sum())
    if not found:
        raise MaskError(f"{name} of shape {mask.shape} is empty (no nonzero voxel)")
    return found / float(np.prod(target.shape))


def _smoothed_blocks(image: Image, sigma: np.ndarray):
    """``image`` smoothed by a Gaussian of ``sigma`` voxels (z, y, x; ``mode="nearest"``),
    block by block: yields each block's region (slices, ``BLOCK`` voxels along each axis at
    most) and its smoothed voxels (float32), equal to those of smoothing the whole image
    (each block is read with the Gaussian's support, 4 sigma, around it)."""
    shape = np.asarray(image.shape)
    halo = (4.0 * sigma + 0.5).astype(int)
    for corner in itertools.product(*(range(0, n, BLOCK) for n in shape)):
        low = np.asarray(corner)
        high = np.minimum(low + BLOCK, shape)
        first, last = np.maximum(low - halo, 0), np.minimum(high + halo, shape)
        data = image.read(tuple(slice(int(a), int(b)) for a, b in zip(first, last, strict=True)))
        smooth = ndimage.gaussian_filter(data.astype(np.float32), sigma, mode="nearest")
        core = tuple(
            slice(int(a - f), int(b - f)) for a, b, f in zip(low, high, first, strict=True)
        )
        yield tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True)), smooth[core]


def sample_stride(shape, least: int = 2) -> int:
    """The stride (at least ``least``) of the voxels a threshold is found on: the smallest
    that keeps at most ``SAMPLE_VOXELS`` voxels of an image of ``shape``."""
    stride = least
    while np.prod([-(-n // stride) for n in shape]) > SAMPLE_VOXELS:
        stride += 1
    return stride


def auto_threshold(image: Image, method: str = "otsu", percentile: float = 50.0,
                   smooth_um: float = 4.0) -> float:  # fmt: skip
    """The automatic mask's threshold on ``image`` smoothed by a Gaussian of ``smooth_um``
    µm: Otsu's (``method="otsu"``) or the ``percentile``-th percentile
    (``method="percentile"``) of the smoothed voxels on every :func:`sample_stride`-th
    voxel along each axis (from voxel 0; the whole image's Otsu threshold took every 2nd
    voxel before, so images of at most 8 x ``SAMPLE_VOXELS`` voxels get the same
    threshold). Reads the image block by block; memory: a block and the sample."""
    if method not in AUTO_METHODS[1:]:
        raise MaskError(f"foreground method {method!r}: expected one of {AUTO_METHODS[1:]}")
    sigma = smooth_um / np.asarray(image.spacing, dtype=float)
    stride = sample_stride(image.shape)
    parts = []
    for region, smooth in _smoothed_blocks(image, sigma):
        first = tuple(slice((-s.start) % stride, None, stride) for s in region)
        parts.append(smooth[first].reshape(-1))
    sample = np.concatenate(parts)
    if np.ptp(sample) == 0:
        raise MaskError("the image is constant: no foreground can be told from background")
    if method == "otsu":
        return float(threshold_otsu(sample))
    return float(np.percentile(sample, percentile))


def foreground_blocks(image: Image, threshold: float, smooth_um: float, write) -> float:
    """Write the foreground of ``image``, its voxels smoothed by a Gaussian of ``smooth_um``
    µm above ``threshold``, block by block through ``write(region, block)`` (as
    :func:`bigstream_core.atomic.npy_blocks` gives); returns the foreground fraction."""
    sigma = smooth_um / np.asarray(image.spacing, dtype=float)
    found = 0
    for region, smooth in _smoothed_blocks(image, sigma):
        block = smooth > threshold
        write(region, block)
        found += int(block.sum())
    return found / float(np.prod(image.shape))


def foreground_mask(
    data: np.ndarray, spacing, method: str = "otsu", percentile: float = 50.0,
    smooth_um: float = 4.0,
) -> np.ndarray:  # fmt: skip
    """Foreground of ``data`` (z, y, x; ``spacing`` µm) in memory: as the workflow's
    automatic mask (:func:`auto_threshold`, :func:`foreground_blocks`) makes it."""
    image = array_image(data, spacing)
    threshold = auto_threshold(image, method, percentile, smooth_um)
    mask = np.empty(image.shape, dtype=bool)

    def write(region, block):
        mask[region] = block

    foreground_blocks(image, threshold, smooth_um, write)
    return mask


def write_config_mask(
    path, entry: dict, levels: dict[str, Image], foreground: dict, role: str
) -> float:
    """Write one image's mask on its low-res grid to ``path`` (``.npy``, uint8 0/1,
    atomically, block by block), as the config asks: its ``mask`` file when the image
    ``entry`` has one, else the automatic mask of ``foreground`` (the config block).
    Returns the foreground fraction."""
    lowres = levels["lowres"]
    with atomic.npy_blocks(path, lowres.shape, np.uint8) as write:
        if entry.get("mask"):
            mask = entry["mask"]
            found = open_image(mask["path"], mask.get("dataset") or None, spacing=(1.0, 1.0, 1.0))
            name = f"{role}.mask ({mask['path']}, dataset {mask.get('dataset')!r})"
            return mask_on_grid(found, levels["highres"].shape, lowres, name, write)
        method, smooth_um = foreground["auto"], foreground["smooth_um"]
        threshold = auto_threshold(lowres, method, foreground["percentile"], smooth_um)
        return foreground_blocks(lowres, threshold, smooth_um, write)


def load_mask(paths: list[str]) -> np.ndarray | None:
    """A saved mask (``.npy``, uint8 0/1 on the low-res grid), memory-mapped, from a list of
    at most one path (None for an empty list: no mask)."""
    return np.load(paths[0], mmap_mode="r") if paths else None
