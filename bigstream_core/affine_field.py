"""The blended local affine field ``L(x) = sum_t w_t(x) A_t x`` and its inverse.

One affine ``A_t`` per tile of the local affine stage (a grid ``(tz, ty, tx)``),
weighted by separable ``sin^2`` partitions of unity (``bigstream_core.blending``)
that are 1 in a tile's core and fall to 0 across the overlap with its
neighbour. Tile edges and blend widths are physical (µm), so one field serves
every level of the image. Points and matrices are µm, z y x; the field maps
fixed points to where they lie under the global affine (``T(x) = G(L(x))``).
Kept apart from the fitting (``local_affine``) so that a job that only applies
the field imports numpy alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from bigstream_core.atomic import write_json
from bigstream_core.blending import axis_weights

FIELD_CONVENTION = "L(x) = sum_t w_t(x) A_t x; fixed -> fixed under the global affine; um, zyx"
BATCH_POINTS = 1 << 18
"""Points evaluated at once by :class:`LocalAffineField` (about 60 MB of working memory)."""


@dataclass(frozen=True)
class LocalAffineField:
    """Blended local affines: ``L(x) = sum_t w_t(x) A_t x``.

    ``affines`` (tz, ty, tx, 4, 4); ``edges[a]`` the physical (µm) boundaries
    between neighbouring tile cores along axis ``a`` (tiles - 1 values);
    ``overlap[a]`` the half-width (µm) of the blend across each boundary.
    """

    affines: np.ndarray
    edges: tuple[np.ndarray, np.ndarray, np.ndarray]
    overlap: tuple[float, float, float]

    def axis_weights(self, axis: int, coordinates: np.ndarray) -> tuple[int, np.ndarray]:
        """Weights along one axis of the tiles that reach ``coordinates``.

        Returns ``(first, weights)``: ``weights[:, k]`` belongs to tile
        ``first + k``; rows sum to 1. Only tiles whose span (core plus blend)
        meets the coordinates' range are included, so a block's cost does not
        grow with the number of tiles in the image.
        """
        return axis_weights(self.edges[axis], self.overlap[axis], coordinates)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """``L(points)``: (N, 3) µm z y x -> (N, 3) µm.

        Per point, the affines of the tiles that reach it are summed with their
        weights into one 3 x 4 matrix, which is then applied; points go in
        batches of ``BATCH_POINTS`` so the working memory stays small.
        """
        points = np.asarray(points, dtype=float)
        result = np.empty_like(points)
        for start in range(0, len(points), BATCH_POINTS):
            batch = points[start : start + BATCH_POINTS]
            (fz, wz), (fy, wy), (fx, wx) = (self.axis_weights(a, batch[:, a]) for a in range(3))
            weights = wz[:, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]
            reached = self.affines[
                fz : fz + wz.shape[1], fy : fy + wy.shape[1], fx : fx + wx.shape[1], :3, :
            ]
            matrices = (weights.reshape(len(batch), -1) @ reached.reshape(-1, 12)).reshape(-1, 3, 4)
            result[start : start + BATCH_POINTS] = (matrices[:, :, :3] @ batch[:, :, None])[
                :, :, 0
            ] + matrices[:, :, 3]
        return result


def invert_local_field(
    field: LocalAffineField, points: np.ndarray, tolerance: float = 1e-4, max_iterations: int = 100
) -> np.ndarray:
    """``L^-1(points)`` (N, 3) µm z y x, by the iteration ``u <- u + J^-1 (v - L(u))``.

    ``J`` is the mean linear part of the tile affines; the blend is close to
    affine, so this converges in a few steps. Raises ``ValueError`` when a point
    is not within ``tolerance`` µm after ``max_iterations``.
    """
    targets = np.asarray(points, dtype=float)
    linear = field.affines[..., :3, :3].reshape(-1, 3, 3).mean(axis=0)
    step = np.linalg.inv(linear).T
    estimate = targets.copy()
    for _ in range(max_iterations):
        residual = targets - field(estimate)
        if len(residual) == 0 or np.abs(residual).max() <= tolerance:
            return estimate
        estimate = estimate + residual @ step
    worst = float(np.abs(targets - field(estimate)).max())
    raise ValueError(
        f"local affine field not inverted: {worst:.3g} um off after {max_iterations} steps"
    )


def write_field(path, field: LocalAffineField) -> None:
    """Save a blended field as JSON (affines, tile edges and blend half-widths in µm)."""
    write_json(
        path,
        {
            "convention": FIELD_CONVENTION,
            "affines": field.affines.tolist(),
            "edges_um": [edges.tolist() for edges in field.edges],
            "overlap_um": list(field.overlap),
        },
    )


def read_field(path) -> LocalAffineField:
    """Load a field written by :func:`write_field`."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    edges = tuple(np.asarray(e, dtype=float) for e in data["edges_um"])
    return LocalAffineField(
        np.asarray(data["affines"], dtype=float), edges, tuple(data["overlap_um"])
    )


def field_from_grid(
    affines: np.ndarray, blocksize, overlap_vox, spacing, origin
) -> LocalAffineField:
    """The blended field of a grid of tile affines (tz, ty, tx, 4, 4).

    The tiles were cut with ``blocksize`` and ``overlap_vox`` voxels (z, y, x)
    from a level with ``spacing`` and ``origin`` (µm): tile cores start at
    multiples of the block size, so the grid's shape gives every edge.
    """
    affines = np.asarray(affines, dtype=float)
    spacing, origin = np.asarray(spacing, dtype=float), np.asarray(origin, dtype=float)
    edges = tuple(
        origin[axis] + (np.arange(1, affines.shape[axis]) * blocksize[axis] - 0.5) * spacing[axis]
        for axis in range(3)
    )
    overlap = tuple(float(o * s) for o, s in zip(overlap_vox, spacing, strict=True))
    return LocalAffineField(affines, edges, overlap)
