"""Linear interpolation: values at points (:func:`linear_at`, with the exact gradient
:func:`linear_with_gradient`), and fields known on a coarse grid interpolated onto a finer one.

``upsample_box`` reads only the coarse nodes a box of the fine grid needs (at
each of its voxels, or at every ``step``-th, e.g. the nodes of another coarse
grid), so a memory-mapped coarse field is never read whole.

A field here is an array (z, y, x, c) of values per voxel (µm for
displacements and positions); the coarse grid's voxel ``j`` sits at fine voxel
``j * factor``, both grids starting at the same voxel.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

OUTSIDE_MODES = {"nearest": "nearest", "zero": "constant"}


def linear_at(data: np.ndarray, voxels, *, outside: str = "nearest", output=None) -> np.ndarray:
    """Trilinear values of ``data`` (z, y, x) at voxel coordinates ``voxels`` (3, ...: an
    array, or one coordinate array per axis); beyond the array the nearest edge value
    (``outside="nearest"``) or 0 (``"zero"``). ``output``: the result's dtype (default
    ``data``'s). The one linear sampler of points (scipy.ndimage.map_coordinates, order 1)."""
    mode = OUTSIDE_MODES[outside]
    return ndimage.map_coordinates(data, voxels, output=output, order=1, mode=mode)


def resize_field(
    field: np.ndarray, shape: tuple[int, int, int], factor: float, start=(0, 0, 0), step: int = 1
) -> np.ndarray:
    """A field (z, y, x, c) on a grid with ``factor`` times the voxel size of ``shape``'s grid,
    interpolated (linear along each axis in turn, edge values held) onto ``shape``: voxel
    ``i`` of the result sits at ``(start + i * step) / factor`` of the input (``step``: the
    result takes every ``step``-th voxel of the finer grid). Values are unchanged (µm stay
    µm); float32."""
    result = np.asarray(field, dtype=np.float32)
    for axis, size in enumerate(shape):
        position = np.clip(
            (start[axis] + step * np.arange(size)) / factor, 0, result.shape[axis] - 1
        )
        low = np.minimum(np.floor(position).astype(int), result.shape[axis] - 2).clip(0)
        high = np.minimum(low + 1, result.shape[axis] - 1)
        weight = (position - low).astype(np.float32)
        view = [1] * result.ndim
        view[axis] = size
        weight = weight.reshape(view)
        result = (
            np.take(result, low, axis=axis) * (1 - weight)
            + np.take(result, high, axis=axis) * weight
        )
    return result


def upsample_box(coarse, box, factor: int, step: int = 1) -> np.ndarray:
    """The part ``box`` (fine voxels ``[(start, stop)] * 3``) of a field given on every
    ``factor``-th fine voxel from voxel 0 (``coarse``, (z, y, x, c), e.g. a memory map), at
    every ``step``-th fine voxel of the box from its start (``ceil((stop - start) / step)``
    per axis): reads the nodes around those voxels only and interpolates them
    (:func:`resize_field`)."""
    shape = tuple(-(-(stop - start) // step) for start, stop in box)
    first = [start // factor for start, _ in box]
    last = [
        min((start + (size - 1) * step) // factor + 2, n)
        for (start, _), size, n in zip(box, shape, coarse.shape, strict=False)
    ]
    nodes = np.asarray(coarse[tuple(slice(a, b) for a, b in zip(first, last, strict=True))])
    offset = [start - node * factor for (start, _), node in zip(box, first, strict=True)]
    return resize_field(nodes, shape, float(factor), offset, step)


def linear_with_gradient(data: np.ndarray, voxels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trilinear values of ``data`` (z, y, x) at voxel coordinates (3, N), with the exact
    gradient of the interpolant (for an optimiser; :func:`linear_at` for values alone).

    Returns values (N,) and the gradient (N, 3) per voxel along z, y, x (the slope of the
    interpolant in the cell holding each point). Points must lie inside the array.
    """
    shape = np.array(data.shape)
    low = np.clip(np.floor(voxels).astype(np.int64), 0, shape[:, None] - 2)
    frac = voxels - low
    flat = data.reshape(-1)
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    base = strides @ low
    corner = {}
    for dz in (0, 1):
        for dy in (0, 1):
            for dx in (0, 1):
                corner[dz, dy, dx] = flat.take(base + strides @ (dz, dy, dx)).astype(np.float64)
    fz, fy, fx = frac
    # along x, then y, then z; each step keeps the slopes the next needs
    c = {(dz, dy): corner[dz, dy, 0] + fx * (corner[dz, dy, 1] - corner[dz, dy, 0])
         for dz in (0, 1) for dy in (0, 1)}  # fmt: skip
    gx = {(dz, dy): corner[dz, dy, 1] - corner[dz, dy, 0] for dz in (0, 1) for dy in (0, 1)}
    planes = [c[dz, 0] + fy * (c[dz, 1] - c[dz, 0]) for dz in (0, 1)]
    slope_y = [c[dz, 1] - c[dz, 0] for dz in (0, 1)]
    slope_x = [gx[dz, 0] + fy * (gx[dz, 1] - gx[dz, 0]) for dz in (0, 1)]
    values = planes[0] + fz * (planes[1] - planes[0])
    gradient = np.empty((len(values), 3))
    gradient[:, 0] = planes[1] - planes[0]
    gradient[:, 1] = slope_y[0] + fz * (slope_y[1] - slope_y[0])
    gradient[:, 2] = slope_x[0] + fz * (slope_x[1] - slope_x[0])
    return values, gradient
