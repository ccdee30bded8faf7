"""Pulling a moving image into the fixed image's grid through a transform.

``aligned(x) = moving(T(x))`` for every fixed voxel centre ``x`` (µm, z y x),
one block at a time: a block reads only the part of the moving image its
voxels map into, so memory is bounded by the block, not by the image.
Voxels that map outside the moving image are 0. The dtype is preserved
(integers rounded and clipped).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import zarr
from scipy import ndimage

from bigstream_core.io import Image
from bigstream_core.tiling import Tile

if TYPE_CHECKING:
    import dask.array as da

PointMap = Callable[[np.ndarray], np.ndarray]


def voxel_centres(region: tuple[slice, slice, slice], spacing, origin) -> np.ndarray:
    """Physical positions (N, 3) µm of the voxel centres of ``region`` (z y x slices)."""
    axes = [
        origin[axis] + spacing[axis] * np.arange(region[axis].start, region[axis].stop)
        for axis in range(3)
    ]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` in ``dtype``: integers rounded and clipped to the type's range."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(dtype)


def resample_block(
    moving: Image,
    transform: PointMap,
    region: tuple[slice, slice, slice],
    fixed_spacing,
    fixed_origin,
    order: int = 1,
    return_inside: bool = False,
):
    """The fixed-grid block ``region`` of the moving image pulled through ``transform``.

    With ``return_inside=True`` also a bool mask of the voxels that map inside the
    moving image (the others are 0 because there is no data, not because it is dark).
    """
    shape = tuple(s.stop - s.start for s in region)
    target = transform(voxel_centres(region, fixed_spacing, fixed_origin))
    voxel = (target - np.asarray(moving.origin)) / np.asarray(moving.spacing)
    margin = max(order, 1)
    low = np.maximum(np.floor(voxel.min(axis=0)).astype(int) - margin, 0)
    high = np.minimum(np.ceil(voxel.max(axis=0)).astype(int) + margin + 1, moving.shape)
    outside = np.any((voxel < -0.5) | (voxel > np.asarray(moving.shape) - 0.5), axis=1)
    if np.any(high <= low):
        empty = np.zeros(shape, dtype=moving.dtype)
        return (empty, np.zeros(shape, dtype=bool)) if return_inside else empty
    source = moving.read(tuple(slice(a, b) for a, b in zip(low, high, strict=True)))
    values = ndimage.map_coordinates(
        source.astype(np.float32),
        (voxel - low).T,
        order=order,
        mode="constant",
        cval=0.0,
        prefilter=order > 1,
    )
    values[outside] = 0
    result = cast_like(values, moving.dtype).reshape(shape)
    return (result, ~outside.reshape(shape)) if return_inside else result


def resample(
    moving: Image,
    transform: PointMap,
    fixed_shape: tuple[int, int, int],
    fixed_spacing,
    fixed_origin=(0.0, 0.0, 0.0),
    order: int = 1,
    chunks: tuple[int, int, int] = (64, 64, 64),
) -> da.Array:
    """Lazy dask array (fixed grid, moving dtype) of the moving image under ``transform``."""

    import dask.array as da  # here: the per-block jobs never need dask

    def block(block_info=None):
        location = block_info[None]["array-location"]
        region = tuple(slice(start, stop) for start, stop in location)
        return resample_block(moving, transform, region, fixed_spacing, fixed_origin, order)

    chunks = tuple(min(c, n) for c, n in zip(chunks, fixed_shape, strict=True))
    return da.map_blocks(
        block, dtype=moving.dtype, chunks=da.core.normalize_chunks(chunks, fixed_shape)
    )


def write_block(
    store: str,
    moving: Image,
    fixed: Image,
    transform: PointMap,
    tile: Tile,
    order: int = 1,
) -> dict:
    """Resample the fixed-grid block ``tile.core`` and write it into level "0" of ``store``.

    The block must consist of whole chunks of the store (the output is created
    with the block size as chunk size), so parallel jobs never touch the same
    chunk. Returns a manifest: the region and a SHA-256 digest of the data.
    """
    region = tile.slices("core")
    data = resample_block(moving, transform, region, fixed.spacing, fixed.origin, order)
    level = zarr.open_array(store, path="0", mode="r+")
    for axis, (start, stop) in enumerate(tile.core):
        chunk = level.chunks[axis]
        if start % chunk or (stop % chunk and stop != level.shape[axis]):
            raise ValueError(
                f"block {tile.id} {tile.core} is not made of whole chunks {level.chunks}"
            )
    level[region] = data
    return {
        "tile": tile.id,
        "core": [list(bounds) for bounds in tile.core],
        "sha256": hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest(),
    }
