"""A whole transform sampled as a displacement field on a regular grid, for other tools.

``D(x) = T(x) - x`` (µm, components z, y, x) at the nodes of a grid over the fixed image,
``T`` the fixed -> moving point map (``T(x) = G(L(x + d(x)))``, design.md §1). A tool that
interpolates ``D`` trilinearly between the nodes and maps a fixed point ``x`` to
``x + D(x)`` reproduces ``T``: exactly for the global affine (linear) and for a
deformation sampled on its own grid (``d`` is trilinear between its nodes, and an affine of
a trilinear function is trilinear), and for the local affines up to a small fraction of the
difference between neighbouring tiles' affines (their ``sin^2`` blends span many nodes).
The grid is computed block by block (:func:`displacement_block`), so the working memory is
one block's, whatever the grid's size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bigstream_core.resample import voxel_centres

PointMap = Callable[[np.ndarray], np.ndarray]

BLOCK_NODES = (64, 128, 128)
"""Nodes (z, y, x) whose displacements are computed at once: 2^20, about 100 MB of working
memory with the transform's intermediates."""
EDGE_TOLERANCE = 1e-9
"""Grid steps: an image edge this close to a node counts as on it."""


@dataclass(frozen=True)
class Grid:
    """A regular grid: ``shape`` nodes, node ``k`` at ``origin + k * spacing`` (z, y, x; µm)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @property
    def nodes(self) -> int:
        """How many nodes the grid has."""
        return math.prod(self.shape)


def covering_grid(shape, spacing, origin, node_spacing, anchor) -> Grid:
    """The grid of nodes ``node_spacing`` apart through the point ``anchor`` that covers the
    voxel centres of an image (``shape`` voxels at ``origin + i * spacing``): from the last
    node at or before the image's first voxel to the first node at or beyond its last, so
    that interpolating between nodes reaches every voxel. All z, y, x; µm."""
    first = np.asarray(origin, dtype=float)
    last = first + (np.asarray(shape) - 1) * np.asarray(spacing, dtype=float)
    node_spacing = np.asarray(node_spacing, dtype=float)
    anchor = np.asarray(anchor, dtype=float)
    low = np.floor((first - anchor) / node_spacing + EDGE_TOLERANCE).astype(int)
    high = np.ceil((last - anchor) / node_spacing - EDGE_TOLERANCE).astype(int)
    return Grid(
        tuple(int(n) for n in high - low + 1),
        tuple(float(s) for s in node_spacing),
        tuple(float(o) for o in anchor + low * node_spacing),
    )


def voxel_grid(shape, spacing, origin, step: int) -> Grid:
    """The grid of every ``step``-th voxel of an image (from voxel 0, with a node at or
    beyond the last voxel): :func:`covering_grid` with nodes ``step * spacing`` apart."""
    node_spacing = np.asarray(spacing, dtype=float) * step
    return covering_grid(shape, spacing, origin, node_spacing, origin)


def fitting_step(shape, spacing, origin, limit: int) -> int:
    """The smallest ``step`` whose :func:`voxel_grid` has at most ``limit`` nodes."""
    step = 1
    while voxel_grid(shape, spacing, origin, step).nodes > limit:
        step += 1
    return step


def displacement_block(transform: PointMap, grid: Grid, box: tuple[slice, ...]) -> np.ndarray:
    """``D(x) = T(x) - x`` at the nodes ``box`` (z, y, x slices of node indices) of ``grid``:
    float32, the box's shape + (3,), µm, components z, y, x."""
    points = voxel_centres(box, grid.spacing, grid.origin)
    displacement = transform(points) - points
    return displacement.reshape(*(s.stop - s.start for s in box), 3).astype(np.float32)
