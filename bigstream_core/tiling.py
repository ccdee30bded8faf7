"""Tile grids: how each stage cuts an image into per-job pieces.

A grid covers an image of ``shape`` voxels (z, y, x) with tiles whose *cores*
partition the image (every voxel belongs to exactly one core, so the job of that
tile owns it) and whose *halos* extend each core by ``overlap`` voxels per side,
clipped to the image, so a job sees the context it needs.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


TILE_ID_PATTERN = r"z\d+_y\d+_x\d+"
_TILE_ID = re.compile(r"z(\d+)_y(\d+)_x(\d+)")

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class Tile:
    """One tile of a grid.

    ``index`` is the tile's position in the grid (z, y, x); ``core`` and
    ``halo`` are ``((z0, z1), (y0, y1), (x0, x1))`` half-open voxel ranges.
    """

    index: tuple[int, int, int]
    core: Box
    halo: Box

    @property
    def id(self) -> str:
        """Stable name of the tile, e.g. ``z0_y2_x11`` (used as a Snakemake wildcard)."""
        z, y, x = self.index
        return f"z{z}_y{y}_x{x}"

    @property
    def halo_voxels(self) -> int:
        """Number of voxels a job reads for this tile (core plus overlap)."""
        return math.prod(stop - start for start, stop in self.halo)

    def slices(self, which: str = "halo") -> tuple[slice, slice, slice]:
        """The tile's ``core`` or ``halo`` as numpy slices (z, y, x)."""
        box = self.core if which == "core" else self.halo
        return tuple(slice(start, stop) for start, stop in box)


def node_tile(tile: Tile, step: int) -> Tile:
    """``tile`` counted in the nodes of a grid on every ``step``-th voxel (node ``k`` at voxel
    ``k * step``, z y x): its core and halo hold the nodes that lie in them, a voxel range
    ``[start, stop)`` becoming ``[ceil(start / step), ceil(stop / step))``. Step 1: the tile."""

    def nodes(box: Box) -> Box:
        return tuple((-(-start // step), -(-stop // step)) for start, stop in box)

    return Tile(index=tile.index, core=nodes(tile.core), halo=nodes(tile.halo))


def parse_tile_id(tile_id: str) -> tuple[int, int, int]:
    """Grid index (z, y, x) of a tile id such as ``z0_y2_x11``."""
    match = _TILE_ID.fullmatch(tile_id)
    if match is None:
        raise ValueError(f"tile id {tile_id!r} does not look like 'z<i>_y<j>_x<k>'")
    return tuple(int(group) for group in match.groups())


def overlap_voxels(blocksize: tuple[int, int, int], fraction: float) -> tuple[int, int, int]:
    """Overlap per side, in voxels, as ``fraction`` of the block size (rounded)."""
    return tuple(int(round(size * fraction)) for size in blocksize)


def tile_grid(
    shape: tuple[int, int, int],
    blocksize: tuple[int, int, int],
    overlap: tuple[int, int, int] = (0, 0, 0),
    align: int = 1,
) -> list[Tile]:
    """Cut an image of ``shape`` voxels into tiles of ``blocksize`` voxels.

    Cores start at multiples of ``blocksize`` (the last one along an axis may be
    smaller); halos add ``overlap`` voxels on each side, clipped to the image,
    and start at a multiple of ``align`` (rounded down: the deform grid aligns
    them to its finest level, so every block's field has its nodes on every
    ``align``-th voxel of the image). All arguments are z, y, x. Tiles are
    returned in C order of their index.
    """
    if any(size <= 0 for size in shape):
        raise ValueError(f"image shape {tuple(shape)} has an empty axis")
    if any(size <= 0 for size in blocksize):
        raise ValueError(f"blocksize {tuple(blocksize)} must be positive on every axis")
    counts = [math.ceil(n / b) for n, b in zip(shape, blocksize, strict=True)]
    tiles = []
    for index in itertools.product(*(range(count) for count in counts)):
        core = tuple(
            (i * b, min((i + 1) * b, n)) for i, b, n in zip(index, blocksize, shape, strict=True)
        )
        halo = tuple(
            (max(start - o, 0) // align * align, min(stop + o, n))
            for (start, stop), o, n in zip(core, overlap, shape, strict=True)
        )
        tiles.append(Tile(index=tuple(index), core=core, halo=halo))
    return tiles


def neighbours(tile: Tile, tiles: dict[str, Tile]) -> list[Tile]:
    """``tile`` and the tiles next to it (grid index within 1 along every axis), in C order."""
    found = []
    for offset in itertools.product((-1, 0, 1), repeat=3):
        index = tuple(i + o for i, o in zip(tile.index, offset, strict=True))
        if min(index) >= 0:
            name = f"z{index[0]}_y{index[1]}_x{index[2]}"
            if name in tiles:
                found.append(tiles[name])
    return found


def tiles_around(tiles: list[Tile], grid: dict[str, Tile]) -> list[Tile]:
    """The tiles of a box of neighbouring tiles (a batch, :func:`tile_batches`) of ``grid``
    (tiles by id) and every tile next to one of them (grid index within 1 along every axis),
    in C order: each box tile's :func:`neighbours`, found once for the whole box."""
    ranges = [
        range(max(min(axis) - 1, 0), max(axis) + 2)
        for axis in zip(*(tile.index for tile in tiles), strict=True)
    ]
    names = (f"z{z}_y{y}_x{x}" for z, y, x in itertools.product(*ranges))
    return [grid[name] for name in names if name in grid]


def tiles_meeting(tiles: list[Tile], low, high) -> list[Tile]:
    """The tiles whose core meets the voxel box ``[low, high)`` (z, y, x), in their order."""
    return [
        tile
        for tile in tiles
        if all(
            start < b and a < stop for (start, stop), a, b in zip(tile.core, low, high, strict=True)
        )
    ]


def tile_batches(tiles: list[Tile], per_job: tuple[int, int, int]) -> dict[str, list[Tile]]:
    """Neighbouring tiles grouped into one job each: boxes of ``per_job`` tiles (z, y, x) of
    the grid, named like tiles by their index in the grid of boxes (``z0_y1_x0``), each
    box's tiles in C order. ``(1, 1, 1)``: one tile per batch, named as the tile."""
    if any(count <= 0 for count in per_job):
        raise ValueError(f"tiles per job {tuple(per_job)} must be positive on every axis")
    batches: dict[str, list[Tile]] = {}
    for tile in tiles:
        batches.setdefault(batch_id(tile.index, per_job), []).append(tile)
    return batches


def budget_batches(
    shape: tuple[int, int, int],
    block: tuple[int, int, int],
    voxels_per_job: int,
    max_jobs: int = 5000,
) -> dict[str, list[Tile]]:
    """The blocks of ``block`` voxels (z, y, x) of an image of ``shape``, batched into
    near-cubic boxes of neighbouring blocks (:func:`batch_shape`), as many as it takes for
    about ``voxels_per_job`` voxels each, at most ``max_jobs``: batch id -> blocks."""
    tiles = tile_grid(shape, block)
    jobs = min(max_jobs, -(-math.prod(int(n) for n in shape) // voxels_per_job))
    return tile_batches(tiles, batch_shape(grid_counts(tiles), jobs))


def grid_counts(tiles: list[Tile]) -> tuple[int, int, int]:
    """Tiles along z, y, x of a grid (its largest index plus one per axis)."""
    return tuple(max(tile.index[axis] for tile in tiles) + 1 for axis in range(3))


def batch_shape(counts: tuple[int, int, int], max_batches: int) -> tuple[int, int, int]:
    """Tiles per batch (z, y, x) that cut a grid of ``counts`` tiles into at most
    ``max_batches`` boxes (:func:`tile_batches`), with as few tiles per box as it takes.

    From one tile per box, the box grows along its shortest axis (ties: the axis the grid
    cuts into the most boxes, then z, y, x) that the grid still cuts, to the smallest size
    that cuts that axis into one box fewer, until the boxes are few enough; then each axis,
    longest first, shrinks back as far as the budget allows (no axis can lose a tile
    without exceeding it). So boxes are near cubes, never longer than the grid along an
    axis, and one tile each where the grid has no more than ``max_batches`` tiles.
    """
    if max_batches < 1:
        raise ValueError(f"at most {max_batches} batches: expected at least 1")
    per_box = [1, 1, 1]
    boxes = list(counts)
    while math.prod(boxes) > max_batches:
        axis = min((a for a in range(3) if boxes[a] > 1), key=lambda a: (per_box[a], -boxes[a], a))
        per_box[axis] = -(-counts[axis] // (boxes[axis] - 1))
        boxes[axis] = -(-counts[axis] // per_box[axis])
    for axis in sorted(range(3), key=lambda a: (-per_box[a], a)):  # back down where it fits
        while per_box[axis] > 1:
            more = -(-counts[axis] // (per_box[axis] - 1))
            if math.prod(boxes) // boxes[axis] * more > max_batches:
                break
            per_box[axis], boxes[axis] = -(-counts[axis] // more), more
    return tuple(per_box)


def batch_id(index: tuple[int, int, int], per_job: tuple[int, int, int]) -> str:
    """Name of the batch of ``per_job`` tiles (z, y, x) that holds the tile at grid ``index``."""
    z, y, x = (i // n for i, n in zip(index, per_job, strict=True))
    return f"z{z}_y{y}_x{x}"


def grid_table(tiles: list[Tile]) -> pd.DataFrame:
    """The grid as a table: one row per tile, voxel ranges per axis (z, y, x)."""
    rows = []
    for tile in tiles:
        row = {"tile": tile.id}
        for name, box in (("core", tile.core), ("halo", tile.halo)):
            for axis, (start, stop) in zip("zyx", box, strict=True):
                row[f"{name}_{axis}0"] = start
                row[f"{name}_{axis}1"] = stop
        rows.append(row)
    import pandas as pd  # here, not at the top: jobs that only cut tiles stay light

    return pd.DataFrame(rows)


STORE_CHUNK = 128
"""Voxels per axis of a written store's chunks where the block size is a multiple of it."""


def block_chunks(blocksize) -> tuple[int, int, int]:
    """Chunks (z y x voxels) of a store filled by blocks of ``blocksize``: ``STORE_CHUNK``
    along an axis whose block size is a multiple of it (readers fetch and decode whole
    chunks; 128^3 suits viewers and the slab-wise reads of the field), else the block
    size itself. Either way every block is made of whole chunks, so parallel jobs never
    share one."""
    return tuple(STORE_CHUNK if b % STORE_CHUNK == 0 else b for b in blocksize)
