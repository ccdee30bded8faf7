"""Pulling a moving image into the fixed image's grid through a transform.

``aligned(x) = moving(T(x))`` for every fixed voxel centre ``x`` (µm, z y x),
one block at a time: a block reads only the part of the moving image its
voxels map into, so memory is bounded by the block, not by the image.
Voxels that map outside the moving image are 0. The dtype is preserved
(integers rounded and clipped).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import zarr
from scipy import ndimage

from bigstream_core.interpolation import resize_field
from bigstream_core.io import Image
from bigstream_core.tiling import Tile

if TYPE_CHECKING:
    import dask.array as da

PointMap = Callable[[np.ndarray], np.ndarray]


SLAB_POINTS = 1 << 20
"""Fixed voxels whose positions are computed at once (about 150 MB of working memory)."""


def voxel_centres(region: tuple[slice, slice, slice], spacing, origin) -> np.ndarray:
    """Physical positions (N, 3) µm of the voxel centres of ``region`` (z y x slices,
    a slice's step taking every step-th voxel), in C order."""
    axes = [
        origin[axis] + spacing[axis] * np.arange(region[axis].start, region[axis].stop,
                                                 region[axis].step or 1)
        for axis in range(3)
    ]  # fmt: skip
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` in ``dtype``: integers rounded and clipped to the type's range."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(dtype)


def moving_voxels(moving: Image, points: np.ndarray) -> np.ndarray:
    """Voxel coordinates (3, N) float32 (z, y, x rows) in ``moving`` of physical
    ``points`` (N, 3) µm: the layout ``map_coordinates`` takes."""
    voxels = (points - np.asarray(moving.origin)) / np.asarray(moving.spacing)
    return np.ascontiguousarray(voxels.T, dtype=np.float32)


def source_window(moving: Image, voxels: np.ndarray, margin: int) -> tuple[slice, ...] | None:
    """The region of ``moving`` that holds ``voxels`` (3, N) plus ``margin`` voxels,
    clipped to the image; None when the voxels miss the image altogether."""
    low = [max(int(np.floor(row.min())) - margin, 0) for row in voxels]
    high = [
        min(int(np.ceil(row.max())) + margin + 1, n)
        for row, n in zip(voxels, moving.shape, strict=True)
    ]
    if any(b <= a for a, b in zip(low, high, strict=True)):
        return None
    return tuple(slice(a, b) for a, b in zip(low, high, strict=True))


def inside_image(shape, voxels: np.ndarray) -> np.ndarray:
    """Bool (N,): the voxel coordinates (3, N) that fall within an image of ``shape``."""
    inside = np.ones(voxels.shape[1], dtype=bool)
    for row, n in zip(voxels, shape, strict=True):
        inside &= (row >= -0.5) & (row <= n - 0.5)
    return inside


def sample(source: np.ndarray, window: tuple[slice, ...], voxels: np.ndarray, order: int):
    """float32 values (N,) at ``voxels`` (3, N image coordinates) of ``source``, the
    image's ``window`` in memory; 0 beyond the window (B-splines prefiltered for
    order > 1). ``voxels`` is shifted in place into the window's frame (no second copy of a
    block's coordinates) and back again after."""
    shift = np.array([s.start for s in window], dtype=np.float32)[:, None]
    voxels -= shift
    try:
        return ndimage.map_coordinates(source, voxels, output=np.float32, order=order,
                                       mode="constant", cval=0.0, prefilter=order > 1)  # fmt: skip
    finally:
        voxels += shift


def transformed_voxels(
    moving: Image, transform: PointMap, region: tuple[slice, slice, slice], fixed_spacing,
    fixed_origin, step: int = 1,
) -> np.ndarray:  # fmt: skip
    """Voxel coordinates (3, N) float32 in ``moving`` of ``transform(x)`` for the voxel
    centres ``x`` of the fixed-grid ``region`` (C order; a slice's step takes every
    step-th voxel), ``SLAB_POINTS`` voxels at a time.

    With ``step > 1`` (a region without steps) the transform is evaluated only
    on every ``step``-th voxel of the fixed grid along each axis (multiples of
    ``step``, from the one at or before the region's first voxel to the one at
    or beyond its last) and its offset ``T(x) - x`` interpolated linearly in
    between. The deformation field is itself linear between the nodes of its
    finest level, which are such multiples (the deform grid's halos start on
    them), so with ``step`` = that level's shrink factor, its nodes are the
    field's and only the local affines' curvature is interpolated: at most
    0.004 voxel on the 2S benchmark pair; 2e-5 voxel (rounding) on the tests'
    pair (a global affine and a sharper deformation). On the stored field's
    nodes the field is read without interpolating
    (:class:`~bigstream_core.displacement.DisplacementField`).
    """
    counts = tuple(len(range(s.start, s.stop, s.step or 1)) for s in region)
    if step > 1 and any((s.step or 1) != 1 for s in region):
        raise ValueError(f"step {step} on a region with steps {region}")
    plane = counts[1] * counts[2]
    planes = max(step, SLAB_POINTS // max(plane, 1) // step * step)
    voxels = np.empty((3, math.prod(counts)), dtype=np.float32)
    first, every = region[0].start, region[0].step or 1
    for z in range(0, counts[0], planes):
        stop = min(z + planes, counts[0])
        slab = (slice(first + z * every, first + stop * every, every), *region[1:])
        points = voxel_centres(slab, fixed_spacing, fixed_origin)
        if step > 1:
            nodes = tuple(slice(s.start // step * step, s.stop - 1 + step, step) for s in slab)
            centres = voxel_centres(nodes, fixed_spacing, fixed_origin)
            offsets = (transform(centres) - centres).reshape(
                *(len(range(s.start, s.stop, s.step)) for s in nodes), 3
            )
            slab_shape = (stop - z, *counts[1:])
            start = [s.start - node.start for s, node in zip(slab, nodes, strict=True)]
            points += resize_field(offsets, slab_shape, float(step), start).reshape(-1, 3)
        else:
            points = transform(points)
        voxels[:, z * plane : stop * plane] = moving_voxels(moving, points)
    return voxels


def resample_region(
    moving: Image,
    transform: PointMap,
    region: tuple[slice, slice, slice],
    fixed_spacing,
    fixed_origin,
    order: int = 1,
    return_inside: bool = False,
    step: int = 1,
):
    """The fixed-grid block ``region`` of the moving image pulled through ``transform``.

    The block's moving coordinates come from :func:`transformed_voxels` (the
    transform evaluated every ``step``-th voxel); the moving image is read once,
    over the window they need, and interpolated once (``order``). With
    ``return_inside=True`` also a bool mask of the voxels that map inside the
    moving image (the others are 0 because there is no data, not because it is dark).
    """
    voxels = transformed_voxels(moving, transform, region, fixed_spacing, fixed_origin, step)
    inside = inside_image(moving.shape, voxels)
    ((result, _),) = pull_channels([moving], voxels, inside, region, order)
    return (result, inside.reshape(result.shape)) if return_inside else result


def pull_channels(
    channels: list[Image], voxels: np.ndarray, inside: np.ndarray, region, order: int
):
    """Each of ``channels`` (images on one grid: the channels of a moving image) at the
    voxel coordinates ``voxels`` (3, N; used up) of the fixed-grid ``region``, one block
    (region's shape, the channel's dtype) after the other; 0 where ``inside`` is False.
    The window the coordinates need is found once and read from each channel in turn.
    Yields ``(block, nonfinite)``: ``nonfinite`` the NaN or infinite voxels in the
    channel's window (read as 0), counted on that read."""
    shape = tuple(s.stop - s.start for s in region)
    window = source_window(channels[0], voxels, max(order, 1))
    for image in channels:
        if window is None:
            yield np.zeros(shape, dtype=image.dtype), 0
            continue
        data, holes = image.read_with_holes(window)
        values = sample(data, window, voxels, order)
        values[~inside] = 0
        yield cast_like(values, image.dtype).reshape(shape), image.count_holes(holes)


def resample(
    moving: Image,
    transform: PointMap,
    fixed_shape: tuple[int, int, int],
    fixed_spacing,
    fixed_origin=(0.0, 0.0, 0.0),
    order: int = 1,
    chunks: tuple[int, int, int] = (64, 64, 64),
    step: int = 1,
) -> da.Array:
    """Lazy dask array (fixed grid, moving dtype) of the moving image under ``transform``
    (``step``: see :func:`transformed_voxels`)."""

    import dask.array as da  # here: the per-block jobs never need dask

    def block(block_info=None):
        location = block_info[None]["array-location"]
        region = tuple(slice(start, stop) for start, stop in location)
        return resample_region(
            moving, transform, region, fixed_spacing, fixed_origin, order, step=step
        )

    chunks = tuple(min(c, n) for c, n in zip(chunks, fixed_shape, strict=True))
    return da.map_blocks(
        block, dtype=moving.dtype, chunks=da.core.normalize_chunks(chunks, fixed_shape)
    )


def resample_block(
    store: str,
    channels: list[Image],
    fixed: Image,
    transform: PointMap,
    tile: Tile,
    order: int = 1,
    step: int = 1,
) -> dict:
    """Resample the fixed-grid block ``tile.core`` of every one of ``channels`` (the moving
    image's channels, on one grid) and write it into level "0" of ``store`` (c, z, y, x).

    The transform is computed once for all channels (:func:`transformed_voxels`, ``step``);
    each channel is cast to the store's dtype and written on its own (memory: one channel's
    block, whatever the number of channels). The block must consist of whole chunks (or
    shards) of the store (see :func:`~bigstream_core.tiling.block_chunks`), so parallel
    jobs never touch the same one. Returns a manifest: the region, a SHA-256 digest of
    the data (all channels) and ``nonfinite_moving``, the NaN or infinite voxels (read as
    0) in the moving windows read, per channel.
    """
    region = tile.slices("core")
    level = zarr.open_array(store, path="0", mode="r+")
    units = (level.shards or level.chunks)[-3:]
    for axis, (start, stop) in enumerate(tile.core):
        if start % units[axis] or (stop % units[axis] and stop != level.shape[-3 + axis]):
            raise ValueError(f"block {tile.id} {tile.core} is not made of whole chunks {units}")
    moving = channels[0]
    voxels = transformed_voxels(moving, transform, region, fixed.spacing, fixed.origin, step)
    inside = inside_image(moving.shape, voxels)
    digest = hashlib.sha256()  # of all channels, in order: the bytes of level[:, region]
    nonfinite = []
    pulled = pull_channels(channels, voxels, inside, region, order)
    for channel, (block, holes) in enumerate(pulled):
        block = block.astype(level.dtype, copy=False)
        level[(channel, *region)] = block  # one write per channel: its shards whole
        digest.update(np.ascontiguousarray(block).tobytes())
        nonfinite.append(holes)
    return {"tile": tile.id, "core": [list(bounds) for bounds in tile.core],
            "sha256": digest.hexdigest(), "nonfinite_moving": nonfinite}  # fmt: skip
