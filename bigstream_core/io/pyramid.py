"""OME-Zarr levels: the level arrays and the 2x mean-downsampled pyramid, written block by
block (memory stays a few chunks' whatever the image's size)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numcodecs
import numpy as np
import zarr

from bigstream_core.io.base import ImageError, _storage_chunks
from bigstream_core.tiling import tile_grid

OME_COMPRESSOR = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
"""Codec of OME-Zarr levels: Blosc is the codec napari, neuroglancer and Fiji all decode."""


def _ome_dataset(level_path: str, spacing: tuple, origin: tuple) -> dict:
    return {
        "path": level_path,
        "coordinateTransformations": [
            {"type": "scale", "scale": [float(s) for s in spacing]},
            {"type": "translation", "translation": [float(o) for o in origin]},
        ],
    }


def _level_factors(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Downsampling factor per axis from a level of `shape`: 2, or 1 along a length-1 axis."""
    return tuple(2 if n > 1 else 1 for n in shape)


def _pyramid_levels(shape: tuple[int, ...], levels: int | None, where: str) -> int:
    """Number of pyramid levels: `levels`, or enough for every axis < 64 voxels (at most 5)."""
    if levels is not None:
        if not isinstance(levels, int) or levels < 1:
            raise ImageError(f"{where}: levels {levels!r}; expected an integer >= 1 or None")
        return levels
    count = 1
    while count < 5 and max(shape) >= 64:
        shape = _downsampled_shape(shape, _level_factors(shape))
        count += 1
    return count


def _downsampled_shape(shape: tuple[int, ...], factors: tuple[int, ...]) -> tuple[int, ...]:
    """Shape after block-mean downsampling by `factors` with edge padding (ceil division)."""
    return tuple(-(-n // f) for n, f in zip(shape, factors, strict=True))


def _create_ome_level(group: zarr.Group, name: str, shape, dtype, chunks: Any) -> zarr.Array:
    """An empty level `name` (Zarr v2, "/" chunk keys, Blosc-zstd, fill value 0)."""
    return group.create_array(
        name,
        shape=shape,
        dtype=dtype,
        chunks=_storage_chunks(shape, chunks),
        compressors=OME_COMPRESSOR,
        chunk_key_encoding={"name": "v2", "separator": "/"},
        fill_value=0,
        overwrite=True,
    )


def _write_downsampled_level(
    group: zarr.Group, name: str, source: zarr.Array, factors: tuple[int, ...], chunks: Any
) -> zarr.Array:
    """Level `name`: the block mean of `source` over `factors` (z y x; the far ends padded
    with their edge values), written one output chunk at a time and computed in slabs of
    about one source chunk, so memory stays a few chunks' whatever the image's size."""
    level = _create_ome_level(
        group, name, _downsampled_shape(source.shape, factors), source.dtype, chunks
    )
    planes = max(1, source.chunks[0] // factors[0])  # output planes per slab
    for tile in tile_grid(level.shape, level.chunks):
        (z0, z1), rows, columns = tile.core
        block = np.empty([stop - start for start, stop in tile.core], level.dtype)
        for start in range(z0, z1, planes):
            stop = min(start + planes, z1)
            block[start - z0 : stop - z0] = _block_mean(
                source, ((start, stop), rows, columns), factors
            )
        level[tile.slices("core")] = block
    return level


def _block_mean(source: zarr.Array, region: tuple, factors: tuple[int, ...]) -> np.ndarray:
    """Mean of `source` over `factors` for the output voxel ranges `region` (z y x), rounded
    and clipped to an integer dtype; summed view by view (one float64 output-sized array)."""
    wanted = [(start * f, stop * f) for (start, stop), f in zip(region, factors, strict=True)]
    read = tuple(slice(a, min(b, n)) for (a, b), n in zip(wanted, source.shape, strict=True))
    data = source[read]
    pad = [(0, b - a - (s.stop - s.start)) for (a, b), s in zip(wanted, read, strict=True)]
    if any(after for _, after in pad):
        data = np.pad(data, pad, mode="edge")
    total = np.zeros([stop - start for start, stop in region], np.float64)
    for offset in itertools.product(*(range(f) for f in factors)):
        total += data[tuple(slice(o, None, f) for o, f in zip(offset, factors, strict=True))]
    mean = total / math.prod(factors)
    if np.issubdtype(source.dtype, np.integer):
        info = np.iinfo(source.dtype)
        mean = np.clip(np.round(mean), info.min, info.max)
    return mean.astype(source.dtype)
