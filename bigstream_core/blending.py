"""Smooth partitions of unity across tile boundaries, one axis at a time.

Neighbouring tiles share a band of ``2 * half`` around each boundary between
their cores; a tile's weight is 1 in its core away from the band, 0 beyond it,
and passes from 1 to 0 as ``sin^2`` across it, so the weights of all tiles sum
to 1 everywhere. Used by the local affine field (µm) and the stitched
displacement field (voxels): the units are the caller's, the same for
``edges``, ``half`` and ``coordinates``.
"""

from __future__ import annotations

import numpy as np


def smooth_step(u: np.ndarray) -> np.ndarray:
    """0 for u <= 0, 1 for u >= 1, sin^2 in between (flat at both ends)."""
    return np.sin(0.5 * np.pi * np.clip(u, 0.0, 1.0)) ** 2


def axis_weights(edges: np.ndarray, half: float, coordinates: np.ndarray) -> tuple[int, np.ndarray]:
    """Weights along one axis of the tiles that reach ``coordinates``.

    ``edges``: the boundaries between tile ``k`` and ``k + 1`` (tiles - 1
    values, increasing); ``half``: half-width of the blend band. Returns
    ``(first, weights)``: ``weights[:, k]`` belongs to tile ``first + k``;
    rows sum to 1. Only tiles whose span (core plus band) meets the
    coordinates' range are included, so the cost does not grow with the number
    of tiles along the axis.
    """
    edges = np.asarray(edges, dtype=float)
    coordinates = np.asarray(coordinates, dtype=float)
    half = max(float(half), 1e-6)
    low, high = float(coordinates.min()), float(coordinates.max())
    first = int(np.searchsorted(edges + half, low, side="right"))
    last = int(np.searchsorted(edges - half, high, side="left"))

    def rising(boundary: int) -> np.ndarray:
        """Share of the tiles after ``boundary`` (0 before it, 1 after, sin^2 across)."""
        if boundary < 0:
            return np.ones_like(coordinates)
        if boundary >= len(edges):
            return np.zeros_like(coordinates)
        return smooth_step((coordinates - (edges[boundary] - half)) / (2 * half))

    shares = [rising(boundary) for boundary in range(first - 1, last + 1)]
    weights = np.stack([shares[k] - shares[k + 1] for k in range(last - first + 1)], axis=1)
    return first, weights
