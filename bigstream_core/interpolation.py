"""Fields known on a coarse grid, interpolated onto a finer one.

``upsample_box`` reads only the coarse nodes a box of the fine grid needs, so
a memory-mapped coarse field is never read whole.

A field here is an array (z, y, x, c) of values per voxel (µm for
displacements and positions); the coarse grid's voxel ``j`` sits at fine voxel
``j * factor``, both grids starting at the same voxel.
"""

from __future__ import annotations

import numpy as np


def resize_field(
    field: np.ndarray, shape: tuple[int, int, int], factor: float, start=(0, 0, 0)
) -> np.ndarray:
    """A field (z, y, x, c) on a grid with ``factor`` times the voxel size of ``shape``'s grid,
    interpolated (linear along each axis in turn, edge values held) onto ``shape``: voxel
    ``i`` of the result sits at ``(start + i) / factor`` of the input. Values are unchanged
    (µm stay µm); float32."""
    result = np.asarray(field, dtype=np.float32)
    for axis, size in enumerate(shape):
        position = np.clip((start[axis] + np.arange(size)) / factor, 0, result.shape[axis] - 1)
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


def upsample_box(coarse, box, factor: int) -> np.ndarray:
    """The part ``box`` (fine voxels ``[(start, stop)] * 3``) of a field given on every
    ``factor``-th fine voxel from voxel 0 (``coarse``, (z, y, x, c), e.g. a memory map):
    reads the nodes around the box only and interpolates them (:func:`resize_field`)."""
    first = [start // factor for start, _ in box]
    last = [
        min((stop - 1) // factor + 2, n) for (_, stop), n in zip(box, coarse.shape, strict=False)
    ]
    nodes = np.asarray(coarse[tuple(slice(a, b) for a, b in zip(first, last, strict=True))])
    shape = tuple(stop - start for start, stop in box)
    offset = [start - node * factor for (start, _), node in zip(box, first, strict=True)]
    return resize_field(nodes, shape, float(factor), offset)
