"""Transforms in the project's convention, and their files.

Every transform maps fixed-space points to moving-space points, in µm, axis
order z, y, x (``aligned(x) = moving(T(x))``). Affines are 4x4 homogeneous
matrices stored as text (``numpy.savetxt``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bigstream_core.atomic import write_text

PointMap = Callable[[np.ndarray], np.ndarray]


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map ``points`` (N, 3) µm z y x through a 4x4 affine."""
    matrix = np.asarray(matrix, dtype=float)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def affine_map(matrix: np.ndarray) -> PointMap:
    """The affine as a function of points (N, 3) µm z y x."""
    matrix = np.array(matrix, dtype=float)
    return lambda points: apply_affine(matrix, points)


def to_xyz(matrix: np.ndarray) -> np.ndarray:
    """The same affine acting on (x, y, z, 1) instead of (z, y, x, 1)."""
    order = [2, 1, 0, 3]
    return np.asarray(matrix, dtype=float)[np.ix_(order, order)]


def write_affine(path: str, matrix: np.ndarray) -> None:
    """Write a 4x4 affine as text, atomically (full precision)."""
    rows = [" ".join(f"{value:.17g}" for value in row) for row in np.asarray(matrix, dtype=float)]
    write_text(path, "\n".join(rows) + "\n")


def read_affine(path: str) -> np.ndarray:
    """Read a 4x4 affine text file and check its shape and last row."""
    matrix = np.loadtxt(path, ndmin=2)
    if matrix.shape != (4, 4) or not np.allclose(matrix[3], [0, 0, 0, 1]):
        raise ValueError(f"{path}: expected a 4x4 homogeneous affine, got {matrix.tolist()}")
    return matrix


def chain(*maps: PointMap) -> PointMap:
    """``chain(G, L)(x) = G(L(x))``: the point maps applied right to left."""

    def composed(points: np.ndarray) -> np.ndarray:
        for point_map in reversed(maps):
            points = point_map(points)
        return points

    return composed
