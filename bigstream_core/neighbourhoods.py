"""Correlation neighbourhoods of key points and their Pearson correlations.

A neighbourhood is the cube of ``(2 * radius + 1)^3`` voxels centred on a key
point's nearest voxel. Stored centred and scaled to unit norm (float32: a
float16 copy halves memory but converting it back costs more than the
products), so the Pearson correlation of two neighbourhoods is their dot
product, computed with BLAS in batches.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from bigstream_core.io import Image

BATCH = 512


def voxel_indices(image: Image, points_um: np.ndarray) -> np.ndarray:
    """Nearest voxel index (N, 3) of physical points (µm, z y x) in ``image``."""
    voxel = (np.asarray(points_um) - np.asarray(image.origin)) / np.asarray(image.spacing)
    return np.rint(voxel).astype(np.int64)


def extract(
    image: Image, points_um: np.ndarray, radius: int, blocksize: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised neighbourhoods of ``points_um`` in ``image``.

    Reads the image block by block (one read per ``blocksize``-voxel cell that
    holds points, each grown by ``radius``), never the whole volume. Returns
    ``(vectors, valid)``: vectors (N, (2r+1)^3) float32, zero-mean and unit-norm;
    ``valid`` is False where the neighbourhood leaves the image or is flat.
    """
    width = 2 * radius + 1
    vectors = np.zeros((len(points_um), width**3), dtype=np.float32)
    valid = np.zeros(len(points_um), dtype=bool)
    if len(points_um) == 0:
        return vectors, valid
    centres = voxel_indices(image, points_um)
    shape = np.array(image.shape)
    inside = np.all((centres >= radius) & (centres < shape - radius), axis=1)
    cells = centres // blocksize
    for cell in np.unique(cells[inside], axis=0):
        members = np.flatnonzero(inside & np.all(cells == cell, axis=1))
        low = centres[members].min(axis=0) - radius
        high = centres[members].max(axis=0) + radius + 1
        block = image.read(tuple(slice(a, b) for a, b in zip(low, high, strict=True)))
        windows = sliding_window_view(block, (width, width, width))
        corner = centres[members] - radius - low
        cubes = windows[corner[:, 0], corner[:, 1], corner[:, 2]].reshape(len(members), -1)
        cubes = cubes.astype(np.float32)
        cubes -= cubes.mean(axis=1, keepdims=True)
        norms = np.linalg.norm(cubes, axis=1)
        flat = norms == 0
        cubes[~flat] /= norms[~flat, None]
        vectors[members] = cubes
        valid[members] = ~flat
    return vectors, valid


def correlation_matrix(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """All-pairs Pearson correlations (len(fixed), len(moving)), float32, in row batches."""
    result = np.empty((len(fixed), len(moving)), dtype=np.float32)
    for start in range(0, len(fixed), BATCH):
        stop = start + BATCH
        result[start:stop] = fixed[start:stop] @ moving.T
    return result


def pair_correlations(fixed: np.ndarray, moving: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Pearson correlation of each ``(i, j)`` row of ``pairs``: fixed[i] with moving[j]."""
    result = np.empty(len(pairs), dtype=np.float32)
    for start in range(0, len(pairs), BATCH):
        chunk = pairs[start : start + BATCH]
        a, b = fixed[chunk[:, 0]], moving[chunk[:, 1]]
        result[start : start + BATCH] = np.einsum("ij,ij->i", a, b)
    return result
