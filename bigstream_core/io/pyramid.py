"""OME-Zarr levels: the level arrays (NGFF 0.4 on Zarr v2, 0.5 on Zarr v3, optionally
sharded), and the 2x mean-downsampled pyramid, written region by region: a level's region
reads only the part of the level below it covers, a few chunks at a time, so memory stays a
few chunks' (or shards') whatever the image's size, and separate jobs can each write their
own regions of a level.

A level array is (z, y, x), or (c, z, y, x) for a multichannel image (chunks of one channel);
downsampling is along z, y, x only.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec

from bigstream_core.io.base import ImageError, _storage_chunks
from bigstream_core.tiling import tile_grid

OME_COMPRESSOR = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
"""Codec of OME-Zarr 0.4 levels (Zarr v2): Blosc is the codec napari, neuroglancer and Fiji
all decode."""
OME_CODEC_V3 = BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")
"""The same codec for OME-Zarr 0.5 levels (Zarr v3)."""
NGFF_ZARR_FORMAT = {"0.4": 2, "0.5": 3}
"""The Zarr format each NGFF version is stored in."""
MAX_LEVELS = 5
"""Most pyramid levels made by default (levels are added until every axis is under 64)."""


def level_factors(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Downsampling factor per axis from a level of `shape`: 2, or 1 along a length-1 axis."""
    return tuple(2 if n > 1 else 1 for n in shape)


def downsampled_shape(shape: tuple[int, ...], factors: tuple[int, ...]) -> tuple[int, ...]:
    """Shape after block-mean downsampling by `factors` with edge padding (ceil division)."""
    return tuple(-(-n // f) for n, f in zip(shape, factors, strict=True))


def pyramid_shapes(
    shape: tuple[int, int, int], levels: int | None = None, where: str = "pyramid"
) -> list[tuple[int, int, int]]:
    """The z, y, x shape of every level, finest first: `levels` of them, or (None) enough for
    every axis to be under 64 voxels, at most :data:`MAX_LEVELS`."""
    if levels is not None and (not isinstance(levels, int) or levels < 1):
        raise ImageError(f"{where}: levels {levels!r}; expected an integer >= 1 or None")
    shapes = [tuple(int(n) for n in shape)]

    def wanted() -> bool:
        if levels is not None:
            return len(shapes) < levels
        return len(shapes) < MAX_LEVELS and max(shapes[-1]) >= 64

    while wanted():
        shapes.append(downsampled_shape(shapes[-1], level_factors(shapes[-1])))
    return shapes


def level_storage(
    shape: tuple[int, int, int], chunks: tuple[int, int, int] | None, shard: Any
) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """A level's z, y, x chunks (`chunks` clipped to its shape) and shards: `shard` (a
    multiple of `chunks`) along an axis whose chunk was not clipped, the (clipped) chunk
    along the others; None unsharded."""
    stored = _storage_chunks(shape, chunks)
    if shard is None:
        return stored, None
    wanted = _storage_chunks((1 << 62,) * 3, chunks)
    return stored, tuple(
        int(s) if c == w else c for s, c, w in zip(shard, stored, wanted, strict=True)
    )


def create_level(
    group: zarr.Group, name: str, shape, dtype, chunks: Any, channels: int | None, shard: Any
) -> zarr.Array:
    """An empty level `name` of z, y, x `shape` (with a leading channel axis of `channels`
    if given): "/" chunk keys (Zarr v2) or the default v3 ones, Blosc-zstd, fill value 0."""
    zyx_chunks, zyx_shard = level_storage(tuple(shape), chunks, shard)
    lead = () if channels is None else (int(channels),)
    ones = () if channels is None else (1,)
    options: dict[str, Any] = {"fill_value": 0, "overwrite": True}
    if group.metadata.zarr_format == 2:
        options |= {"compressors": OME_COMPRESSOR,
                    "chunk_key_encoding": {"name": "v2", "separator": "/"}}  # fmt: skip
    else:  # NGFF 0.5 asks for the axes' names on the arrays too
        options["compressors"] = OME_CODEC_V3
        options["dimension_names"] = ("c", "z", "y", "x")[-len(lead) - 3 :]
        if zyx_shard is not None:
            options["shards"] = (*ones, *zyx_shard)
    return group.create_array(
        name, shape=(*lead, *shape), dtype=dtype, chunks=(*ones, *zyx_chunks), **options
    )


def write_units(level: zarr.Array) -> tuple[int, int, int]:
    """The z, y, x shape of a level's write unit: its shard (a whole shard is written at
    once, not chunk by chunk into it) or else its chunk."""
    return tuple((level.shards or level.chunks)[-3:])


def downsample_region(source: zarr.Array, target: zarr.Array, core=None) -> None:
    """Write the z, y, x region `core` (``((z0, z1), (y0, y1), (x0, x1))`` voxels of
    `target`, whole write units of it; None: all of it) of `target` as the block mean of
    `source`, the level below, over the factors between them (the far ends padded with
    their edge values), channel by channel, one write unit at a time, each computed in z
    slabs of about one source chunk."""
    factors = level_factors(source.shape[-3:])
    shape = tuple(target.shape[-3:])
    if core is None:
        core = tuple((0, n) for n in shape)
    units = write_units(target)
    for axis, (start, stop) in enumerate(core):
        if start % units[axis] or (stop % units[axis] and stop != shape[axis]):
            raise ValueError(f"region {core} of {target.path!r} is not whole units {units}")
    planes = max(1, source.chunks[-3] // factors[0])  # output planes per slab
    channels = [()] if target.ndim == 3 else [(c,) for c in range(target.shape[0])]
    boxes = [tile.core for tile in tile_grid(tuple(b - a for a, b in core), units)]
    for channel, box in itertools.product(channels, boxes):
        box = tuple((a + start, b + start) for (a, b), (start, _) in zip(box, core, strict=True))
        (z0, z1), rows, columns = box
        block = np.empty([stop - start for start, stop in box], target.dtype)
        for start in range(z0, z1, planes):
            stop = min(start + planes, z1)
            block[start - z0 : stop - z0] = _block_mean(
                source, channel, ((start, stop), rows, columns), factors
            )
        target[(*channel, *(slice(a, b) for a, b in box))] = block


def _block_mean(
    source: zarr.Array, channel: tuple, region: tuple, factors: tuple[int, ...]
) -> np.ndarray:
    """Mean of `source` (at `channel`: () or (c,)) over `factors` for the output voxel ranges
    `region` (z y x), rounded and clipped to an integer dtype; summed view by view (one
    float64 output-sized array)."""
    wanted = [(start * f, stop * f) for (start, stop), f in zip(region, factors, strict=True)]
    shape = source.shape[-3:]
    read = tuple(slice(a, min(b, n)) for (a, b), n in zip(wanted, shape, strict=True))
    data = source[(*channel, *read)]
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


def ome_dataset(level_path: str, spacing: tuple, origin: tuple, channels: bool) -> dict:
    """A multiscale's dataset entry: scale and translation (z y x µm; 1 and 0 on a leading
    channel axis)."""
    lead_scale, lead_shift = ([1.0], [0.0]) if channels else ([], [])
    return {
        "path": level_path,
        "coordinateTransformations": [
            {"type": "scale", "scale": lead_scale + [float(s) for s in spacing]},
            {"type": "translation", "translation": lead_shift + [float(o) for o in origin]},
        ],
    }
