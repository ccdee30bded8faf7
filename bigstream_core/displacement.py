"""The deformation's displacement field on the fixed high-res grid, and its inverse.

A displacement field ``d`` is stored on the nodes of the fixed high-res grid
taken every ``shrink``-th voxel from voxel 0: node ``k`` (z, y, x) sits at
fixed voxel ``k * shrink``, position ``origin + k * shrink * spacing`` (µm);
``ceil(n / shrink)`` nodes along an axis of ``n`` voxels, the array (Z', Y',
X', 3) float32 with the displacement in µm, components z, y, x. Its
attributes record the node grid: ``spacing_um`` (the fixed spacing times
``shrink``), ``origin_um`` (the fixed origin) and ``shrink``. Between nodes
(and at every fixed voxel) a reader interpolates trilinearly; beyond the last
node it takes the edge value. ``shrink`` is the deform stage's finest level's
by default (``deform.field_shrink``), the resolution the field has; 1 stores
every voxel. It acts before the affine stages: ``T(x) = G(L(x + d(x)))``. Its
inverse ``e`` is stored the same way, on the same nodes, with ``y + e(y)``
undoing ``x + d(x)``.

The per-block fields of the deform jobs are stitched into one Zarr
(``transform/field.zarr``) region by region: a region is one block's core, and
the fields of the blocks whose overlap reaches it are blended with the smooth
partition of unity of :mod:`bigstream_core.blending` (weights fall to 0 at
each block's edge), so the stitched field has no seams. Blocks are blended at
their fields' own nodes (every finest-level-shrink-th voxel of the image, where
every block's halo starts), and the blend is linear in between like each
block's field: stored at that shrink it loses nothing, and stored at shrink 1
it is the same function at every voxel. Each region is whole chunks of the
store, written by one job.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from collections.abc import Callable

import numcodecs
import numpy as np
import zarr

from bigstream_core.blending import axis_weights
from bigstream_core.interpolation import linear_at, resize_field, upsample_box
from bigstream_core.resample import SLAB_POINTS, voxel_centres
from bigstream_core.tiling import Tile, node_tile

CONVENTION = (
    "T(x) = G(L(x + d(x))); d in um, components z y x, on every shrink-th voxel of the fixed "
    "high-res grid (node k at voxel k * shrink), interpolated linearly in between"
)
INVERSE_CONVENTION = (
    "x = y + e(y) undoes x -> x + d(x); e in um, components z y x, on the nodes of d"
)
READ_LIMIT_VOXELS = 2**24
"""A point query reads the field's bounding box of the points up to this many voxels;
beyond it, one bounding box per chunk that holds points (memory stays bounded)."""
FIELD_COMPRESSOR = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
"""Codec of the field stores: decodes 4x faster than zarr's default zstd (every resample
slab reads the field) and is smaller on float32 displacements (2S pair, a quarter of the
field: 0.09 s vs 0.36 s per 96 MB read; 550 MB vs 647 MB zstd, 769 MB raw)."""
NODE_TOLERANCE = 1e-6
"""Voxels: points this close to the field's grid nodes take the node values as they are."""


class DisplacementField:
    """``x -> x + d(x)``, with ``d`` interpolated (trilinear) from a stored field.

    ``array``: (Z, Y, X, 3) numpy or Zarr array, µm; ``spacing``/``origin``:
    its grid, z y x µm; ``shrink``: fixed voxels between its nodes, as recorded
    (not used to interpolate). Points beyond the grid take the nearest edge value.
    Only the part of the array around the queried points is read, extended
    along z to whole chunks and kept for the next query that falls inside it:
    a block's slabs, queried one after the other, decode each chunk once.
    """

    def __init__(self, array, spacing, origin=(0.0, 0.0, 0.0), shrink: int = 1):
        if array.ndim != 4 or array.shape[-1] != 3:
            raise ValueError(f"displacement field of shape {array.shape}: expected (Z, Y, X, 3)")
        self.array = array
        self.spacing = np.asarray(spacing, dtype=float)
        self.origin = np.asarray(origin, dtype=float)
        self.shrink = int(shrink)
        self.shape = np.asarray(array.shape[:3])
        chunks = getattr(array, "chunks", array.shape)
        self.chunks = np.asarray(chunks[:3])
        self._kept: tuple[np.ndarray, np.ndarray] | None = None  # (first voxel, data)

    def _read(self, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The field over voxels ``[low, high)`` or a larger box: (its first voxel, data)."""
        kept = self._kept
        if (
            kept is not None
            and np.all(low >= kept[0])
            and np.all(high <= kept[0] + kept[1].shape[:3])
        ):
            return kept
        low, high = low.copy(), high.copy()
        low[0] = low[0] // self.chunks[0] * self.chunks[0]
        high[0] = min(-(-high[0] // self.chunks[0]) * self.chunks[0], self.shape[0])
        box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
        self._kept = (low, np.asarray(self.array[box]))
        return self._kept

    def displacement(self, points: np.ndarray) -> np.ndarray:
        """``d(points)``: (N, 3) µm z y x -> (N, 3) µm."""
        points = np.asarray(points, dtype=float)
        result = np.zeros_like(points)
        if len(points) == 0:
            return result
        voxel = np.clip((points - self.origin) / self.spacing, 0, self.shape - 1)
        low = np.floor(voxel.min(axis=0)).astype(int)
        high = np.minimum(np.floor(voxel.max(axis=0)).astype(int) + 2, self.shape)
        if math.prod(high - low) <= max(READ_LIMIT_VOXELS, 8 * len(points)):
            return self._interpolate(voxel, low, high)
        keys = np.floor(voxel / self.chunks).astype(int)
        _, group = np.unique(keys, axis=0, return_inverse=True)
        for label in range(group.max() + 1):
            members = group.ravel() == label
            part = voxel[members]
            low = np.floor(part.min(axis=0)).astype(int)
            high = np.minimum(np.floor(part.max(axis=0)).astype(int) + 2, self.shape)
            result[members] = self._interpolate(part, low, high)
        return result

    def _interpolate(self, voxel: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        low, region = self._read(low, high)
        nodes = np.rint(voxel)
        if np.abs(voxel - nodes).max() < NODE_TOLERANCE:  # on the grid's nodes: no interpolation
            index = (nodes - low).astype(np.intp)
            return region[index[:, 0], index[:, 1], index[:, 2]].astype(float)
        coords = (voxel - low).T
        return np.stack(
            [linear_at(region[..., c].astype(np.float32), coords) for c in range(3)],
            axis=1,
        ).astype(float)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """``points + d(points)`` (N, 3) µm."""
        points = np.asarray(points, dtype=float)
        return points + self.displacement(points)


def node_grid(shape, spacing, shrink: int) -> tuple[tuple[int, ...], list[float]]:
    """The stored field's nodes on a fixed grid of ``shape`` voxels and ``spacing`` µm (z y x):
    a node every ``shrink``-th voxel from voxel 0, so ``ceil(n / shrink)`` per axis, spaced
    ``shrink * spacing`` µm (the origin is the fixed grid's)."""
    return tuple(-(-int(n) // shrink) for n in shape), [float(s) * shrink for s in spacing]


def create_store(
    path, shape, spacing, origin, chunks, convention: str = CONVENTION, shrink: int = 1
):
    """Create (replace) an empty field Zarr (v2) of ``shape + (3,)`` float32, chunked
    ``chunks + (3,)``, with its grid in the attributes: ``shape`` nodes (z y x) spaced
    ``spacing`` µm from ``origin``, on every ``shrink``-th voxel of the fixed grid
    (:func:`node_grid`; 1: every voxel). Returns the array."""
    array = zarr.create_array(
        os.fspath(path),
        shape=(*shape, 3),
        chunks=(*chunks, 3),
        dtype="float32",
        fill_value=0.0,
        compressors=FIELD_COMPRESSOR,
        zarr_format=2,
        overwrite=True,
    )
    array.attrs.update(
        {
            "convention": convention,
            "axes": ["z", "y", "x", "component (z, y, x)"],
            "unit": "micrometer",
            "spacing_um": [float(s) for s in spacing],
            "origin_um": [float(o) for o in origin],
            "shrink": int(shrink),
            "complete": False,
        }
    )
    return array


def open_field(path) -> DisplacementField:
    """The field stored at ``path`` (written by :func:`create_store` and the region jobs)."""
    array = zarr.open_array(os.fspath(path), mode="r")
    attrs = array.attrs.asdict()
    if not attrs.get("complete"):
        raise ValueError(f"{path}: the field is not complete (a job that writes it did not finish)")
    return DisplacementField(array, attrs["spacing_um"], attrs["origin_um"], attrs.get("shrink", 1))


def stitch_region(
    tile: Tile,
    neighbours: list[Tile],
    shape: tuple[int, int, int],
    blocksize: tuple[int, int, int],
    overlap: tuple[int, int, int],
    read_block: Callable[[Tile], np.ndarray],
    shrink: int = 1,
    step: int = 1,
) -> np.ndarray:
    """The blended field over ``tile``'s core at the stored grid's nodes in it (every
    ``step``-th voxel from voxel 0: ``node_tile(tile, step)``'s core shape + (3,)).

    The deform grid covers ``shape`` voxels with ``blocksize`` cores and
    ``overlap`` voxels per side; ``neighbours`` are ``tile`` and the blocks
    around it; ``read_block(t)`` gives block ``t``'s field over its halo on
    every ``shrink``-th voxel (as :func:`~bigstream_core.deform.register_tile`
    returns it; a memory map is best: only the nodes around the region are
    read). The blocks are blended at the nodes of the blocks' fields, every
    ``shrink``-th voxel of the image (the deform grid's halos start on them,
    ``tile_grid(..., align=shrink)``; :func:`_blend_at_nodes`), and the blend is
    interpolated linearly (edge values held) to the stored nodes: with ``step``
    = ``shrink`` it is stored as it is. The stitched field is then linear between
    those nodes, like each block's field, whatever ``step`` stores it: where one
    block's weight is 1 it is that block's own field.
    """
    positions = [np.arange(a, b) * step for a, b in node_tile(tile, step).core]  # voxels
    lattice = [
        np.arange(p[0] // shrink, min(-(-p[-1] // shrink) + 1, -(-n // shrink))) * shrink
        for p, n in zip(positions, shape, strict=True)
    ]
    blend = _blend_at_nodes(
        tile, neighbours, shape, blocksize, overlap, read_block, shrink, lattice
    )
    start = [int(p[0] - nodes[0]) for p, nodes in zip(positions, lattice, strict=True)]
    return resize_field(blend, tuple(len(p) for p in positions), float(shrink), start, step)


def _blend_at_nodes(tile, neighbours, shape, blocksize, overlap, read_block, shrink, lattice):
    """The blocks' fields blended at the voxels ``lattice`` (one increasing array per axis,
    z y x, near ``tile``'s core), arguments as :func:`stitch_region`'s: the sum over the
    blocks whose weight reaches them of the weight times the block's field there (read
    from the block's nodes around them only), (len z, len y, len x, 3) float32 µm."""
    by_index = {neighbour.index: neighbour for neighbour in neighbours}
    axes = []
    for a in range(3):
        edges = np.arange(1, math.ceil(shape[a] / blocksize[a])) * blocksize[a] - 0.5
        axes.append(axis_weights(edges, overlap[a], lattice[a].astype(float)))
    result = np.zeros((*(len(nodes) for nodes in lattice), 3), dtype=np.float32)
    for local in itertools.product(*(range(w.shape[1]) for _, w in axes)):
        index = tuple(first + k for (first, _), k in zip(axes, local, strict=True))
        columns = [weights[:, k] for (_, weights), k in zip(axes, local, strict=True)]
        spans = [np.flatnonzero(column > 0) for column in columns]
        if any(len(span) == 0 for span in spans):
            continue
        box = [(int(span[0]), int(span[-1]) + 1) for span in spans]
        neighbour = by_index[index]
        source = []
        for axis, (a, b) in enumerate(box):
            start = int(lattice[axis][a]) - neighbour.halo[axis][0]
            stop = int(lattice[axis][b - 1]) + 1 - neighbour.halo[axis][0]
            if start < 0 or stop > neighbour.halo[axis][1] - neighbour.halo[axis][0]:
                raise ValueError(
                    f"block {neighbour.id}'s field does not cover its blend band in {tile.id}"
                )
            source.append((start, stop))
        weight = np.einsum(
            "i,j,k->ijk", *(column[a:b] for column, (a, b) in zip(columns, box, strict=True))
        ).astype(np.float32)
        target = tuple(slice(a, b) for a, b in box)
        part = upsample_box(read_block(neighbour), source, shrink, shrink)
        result[target] += weight[..., None] * part
    return result


def jacobian_determinant(field: np.ndarray, spacing) -> np.ndarray:
    """``det(I + grad d)`` (float32) at every voxel of a field (Z, Y, X, 3) µm on a grid of
    ``spacing`` µm (central differences, one-sided at the edges). Where it is <= 0 the map
    folds. Written out by cofactors: 9 float32 derivatives are the whole working memory."""
    j = [list(np.gradient(field[..., c].astype(np.float32), *spacing)) for c in range(3)]
    for axis in range(3):
        j[axis][axis] += 1.0  # j[c][a] = d(x_c + d_c) / d x_a
    return (
        j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
        - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
        + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0])
    )


JACOBIAN_SLAB_PLANES = 32
"""z planes whose Jacobian determinants are computed at once by :func:`jacobian_summary`."""


def jacobian_summary(field: np.ndarray, spacing) -> tuple[float, int]:
    """The smallest Jacobian determinant of ``x + field(x)`` and how many voxels fold
    (determinant <= 0), z slab by z slab with one plane of context on each side: the
    values of :func:`jacobian_determinant` over the whole field, in a slab's memory."""
    if min(field.shape[:3]) < 2:
        return 1.0, 0
    smallest, folded, planes = np.inf, 0, field.shape[0]
    for z in range(0, planes, JACOBIAN_SLAB_PLANES):
        low, high = max(z - 1, 0), min(z + JACOBIAN_SLAB_PLANES + 1, planes)
        determinant = jacobian_determinant(field[low:high], spacing)
        determinant = determinant[z - low : z - low + min(JACOBIAN_SLAB_PLANES, planes - z)]
        smallest = min(smallest, float(determinant.min()))
        folded += int((determinant <= 0).sum())
    return smallest, folded


def largest_um(field: np.ndarray) -> float:
    """The largest displacement (µm) of a field (..., 3)."""
    return float(np.sqrt(np.einsum("...i,...i->...", field, field).max())) if field.size else 0.0


def write_region(array, tile: Tile, data: np.ndarray) -> dict:
    """Write ``data`` over ``tile``'s core of a field store; ``tile`` counts the store's
    nodes (:func:`~bigstream_core.tiling.node_tile` of a block), its core must be whole
    chunks. Returns a manifest: region (nodes), SHA-256 of the data, largest displacement
    (µm), the smallest Jacobian determinant of ``x + data(x)`` on the region's nodes and
    how many of them fold (determinant <= 0; ``folded_voxels``, nodes of the store)."""
    for axis, (start, stop) in enumerate(tile.core):
        chunk = array.chunks[axis]
        if start % chunk or (stop % chunk and stop != array.shape[axis]):
            raise ValueError(
                f"region {tile.id} {tile.core} is not made of whole chunks {array.chunks}"
            )
    array[(*tile.slices("core"), slice(None))] = data
    smallest, folded = jacobian_summary(data, array.attrs["spacing_um"])
    return {
        "jacobian_min": smallest,
        "folded_voxels": folded,
        "tile": tile.id,
        "core": [list(bounds) for bounds in tile.core],
        "max_um": largest_um(data),
        "sha256": hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest(),
    }


def invert_region(
    field: DisplacementField,
    tile: Tile,
    tolerance_um: float = 1e-3,
    max_iterations: int = 200,
) -> tuple[np.ndarray, dict]:
    """The inverse field ``e`` over ``tile``'s core: ``e(y) = -d(y + e(y))``, iterated, at
    the forward field's nodes (``tile`` counts them: :func:`~bigstream_core.tiling.node_tile`).

    Reads the forward field around the core once (margin: the largest
    displacement in the core plus 2 nodes), then inverts ``SLAB_POINTS`` points
    at a time. Returns ``e`` (core shape + (3,), float32) and a report:
    iterations, largest residual ``|e(y) + d(y + e(y))|`` in µm (how far the
    forward map lands from ``y`` after the inverse), and the inverse-consistency
    error the other way round (:func:`round_trip_error`). Each point iterates
    until its step is under ``tolerance_um`` (the iteration contracts where
    ``|grad d| < 1``, i.e. where the forward map does not fold).
    """
    core_box = tile.slices("core")
    core = np.asarray(field.array[(*core_box, slice(None))])
    margin = np.ceil(largest_um(core) / field.spacing).astype(int) + 2
    low = np.maximum(np.array([a for a, _ in tile.core]) - margin, 0)
    high = np.minimum(np.array([b for _, b in tile.core]) + margin, field.shape)
    region = np.asarray(field.array[tuple(slice(a, b) for a, b in zip(low, high, strict=True))])
    local = DisplacementField(region, field.spacing, field.origin + low * field.spacing)
    shape = core.shape[:3]
    inverse = np.empty(core.shape, dtype=np.float32)
    planes = max(1, SLAB_POINTS // max(shape[1] * shape[2], 1))
    iterations, residual = 0, 0.0
    for z in range(0, shape[0], planes):
        slab = (slice(core_box[0].start + z, core_box[0].start + min(z + planes, shape[0])),
                *core_box[1:])  # fmt: skip
        points = voxel_centres(slab, field.spacing, field.origin)
        start = -core[z : z + planes].reshape(-1, 3).astype(float)
        part, steps, worst = _invert_points(local, points, start, tolerance_um, max_iterations)
        inverse[z : z + planes] = part.reshape(-1, *shape[1:], 3)
        iterations, residual = max(iterations, steps), max(residual, worst)
    origin = field.origin + np.array([a for a, _ in tile.core]) * field.spacing
    consistency = round_trip_error(core, DisplacementField(inverse, field.spacing, origin))
    return inverse, {"iterations": iterations, "residual_um": residual, **consistency}


def round_trip_error(forward: np.ndarray, inverse: DisplacementField) -> dict:
    """The inverse-consistency error ``|d(x) + e(x + d(x))|`` (µm): how far the inverse
    field, interpolated as every reader interpolates it, brings each node ``x`` of a region
    back from ``x + d(x)``. ``forward``: ``d`` over the region's nodes (Z, Y, X, 3) µm, on
    the grid of ``inverse`` (the region's ``e``); nodes whose ``x + d(x)`` leaves the region
    are not counted. Returns its mean and largest value, and the nodes counted
    (``round_trip_voxels``: voxels of the stored grid)."""
    shape = np.asarray(forward.shape[:3])
    planes = max(1, SLAB_POINTS // max(int(shape[1] * shape[2]), 1))
    total, largest, counted = 0.0, 0.0, 0
    for z in range(0, int(shape[0]), planes):
        slab = (slice(z, min(z + planes, int(shape[0]))), slice(0, shape[1]), slice(0, shape[2]))
        points = voxel_centres(slab, inverse.spacing, inverse.origin)
        moved = forward[z : z + planes].reshape(-1, 3).astype(float)
        there = points + moved
        voxel = (there - inverse.origin) / inverse.spacing
        keep = np.all((voxel >= 0) & (voxel <= shape - 1), axis=1)
        if not keep.any():
            continue
        error = np.linalg.norm(moved[keep] + inverse.displacement(there[keep]), axis=1)
        total, counted = total + float(error.sum()), counted + int(keep.sum())
        largest = max(largest, float(error.max()))
    return {"round_trip_mean_um": total / counted if counted else float("nan"),
            "round_trip_max_um": largest, "round_trip_voxels": counted}  # fmt: skip


def round_trip_summary(regions: list[dict]) -> dict:
    """The inverse-consistency error of a whole inverse field from its regions' reports
    (:func:`invert_region`): the mean over every voxel counted, the largest, in µm."""
    counted = sum(region["round_trip_voxels"] for region in regions)
    total = sum(region["round_trip_mean_um"] * region["round_trip_voxels"]
                for region in regions if region["round_trip_voxels"])  # fmt: skip
    largest = max(region["round_trip_max_um"] for region in regions)
    return {"round_trip_mean_um": total / counted if counted else float("nan"),
            "round_trip_max_um": largest}  # fmt: skip


def _invert_points(local, points, inverse, tolerance_um, max_iterations):
    """``e`` at ``points`` (N, 3) µm from the start ``inverse``: (e, iterations, residual µm)."""
    active = np.arange(len(points))  # points not yet within the tolerance
    iterations = 0
    while len(active) and iterations < max_iterations:
        iterations += 1
        updated = -local.displacement(points[active] + inverse[active])
        change = np.abs(updated - inverse[active]).max(axis=1)
        inverse[active] = updated
        active = active[change > tolerance_um]
    check = points + inverse
    residual = float(np.abs(inverse + local.displacement(check)).max()) if len(points) else 0.0
    return inverse, iterations, residual
