"""Tile grids: cores partition the image, halos add the overlap, ids round-trip."""

import math

import numpy as np
import pytest

from bigstream_core.tiling import (
    batch_id,
    batch_shape,
    grid_counts,
    grid_table,
    neighbours,
    node_tile,
    overlap_voxels,
    parse_tile_id,
    tile_batches,
    tile_grid,
    tiles_around,
)
from bigstream_workflow.plan import AUTO_JOBS, blocks_per_job


@pytest.mark.parametrize(
    ("shape", "blocksize", "overlap"),
    [
        ((10, 23, 7), (4, 8, 7), (1, 2, 0)),
        ((5, 5, 5), (8, 8, 8), (3, 3, 3)),
        ((9, 1, 16), (3, 1, 5), (2, 0, 1)),
    ],
)
def test_cores_partition_the_image_and_halos_contain_them(shape, blocksize, overlap):
    tiles = tile_grid(shape, blocksize, overlap)
    owners = np.zeros(shape, dtype=int)
    for tile in tiles:
        owners[tile.slices("core")] += 1
        for (c0, c1), (h0, h1), o, n in zip(tile.core, tile.halo, overlap, shape, strict=True):
            assert h0 == max(c0 - o, 0) and h1 == min(c1 + o, n)
    assert (owners == 1).all()
    expected = np.prod([-(-n // b) for n, b in zip(shape, blocksize, strict=True)])
    assert len(tiles) == expected


def test_aligned_halos_start_on_the_lattice_and_node_tiles_count_its_nodes():
    """The deform grid's halos start on every 2nd voxel (its blocks' field nodes); a block
    in the nodes of a field stored on every 2nd voxel holds the nodes inside it."""
    tiles = tile_grid((80, 21, 9), (40, 10, 4), (5, 3, 1), align=2)
    assert [tile.halo[0] for tile in tiles if tile.index[1:] == (0, 0)] == [(0, 45), (34, 80)]
    assert {tile.halo[1][0] for tile in tiles} == {0, 6, 16}
    last = node_tile(tiles[-1], 2)  # core (40, 80), (20, 21), (8, 9); halo (34, 80), ...
    assert last.core == ((20, 40), (10, 11), (4, 5)) and last.halo[0] == (17, 40)
    assert node_tile(tiles[-1], 1) == tiles[-1]


def test_tile_ids_and_table():
    tiles = tile_grid((10, 20, 30), (5, 10, 10), (1, 1, 1))
    assert tiles[-1].id == "z1_y1_x2"
    assert [parse_tile_id(t.id) for t in tiles] == [t.index for t in tiles]
    table = grid_table(tiles)
    assert list(table["tile"]) == [t.id for t in tiles]
    row = table.set_index("tile").loc["z1_y0_x2"]
    assert (row["core_z0"], row["core_z1"], row["halo_x0"], row["halo_x1"]) == (5, 10, 19, 30)
    assert tiles[0].halo_voxels == 6 * 11 * 11


def test_overlap_fraction_and_errors():
    assert overlap_voxels((64, 128, 100), 0.125) == (8, 16, 12)
    with pytest.raises(ValueError, match="empty axis"):
        tile_grid((0, 4, 4), (2, 2, 2))
    with pytest.raises(ValueError, match="z<i>_y<j>_x<k>"):
        parse_tile_id("tile3")


def test_batches_are_boxes_of_neighbouring_tiles_that_cover_the_grid_once():
    tiles = tile_grid((10, 20, 30), (5, 10, 10), (1, 1, 1))  # a 2 x 2 x 3 grid
    batches = tile_batches(tiles, (2, 1, 2))
    assert sorted(batches) == ["z0_y0_x0", "z0_y0_x1", "z0_y1_x0", "z0_y1_x1"]
    assert [t.id for t in batches["z0_y1_x0"]] == ["z0_y1_x0", "z0_y1_x1", "z1_y1_x0", "z1_y1_x1"]
    assert [t.id for t in batches["z0_y0_x1"]] == ["z0_y0_x2", "z1_y0_x2"]  # the grid's end
    assert sorted(t.id for b in batches.values() for t in b) == sorted(t.id for t in tiles)
    assert all(batch_id(t.index, (2, 1, 2)) == name for name, b in batches.items() for t in b)
    assert {name: [t.id for t in b] for name, b in tile_batches(tiles, (1, 1, 1)).items()} == {
        t.id: [t.id] for t in tiles
    }
    with pytest.raises(ValueError, match=r"tiles per job \(0, 1, 1\)"):
        tile_batches(tiles, (0, 1, 1))


def _boxes(counts, per_box):
    return math.prod(-(-n // b) for n, b in zip(counts, per_box, strict=True))


@pytest.mark.parametrize(
    "counts",
    [(1, 1, 1), (1, 1, 7), (3, 5, 2), (10, 10, 10), (1, 1000, 1), (4, 60, 61), (7, 300, 450),
     (80, 112, 112), (100, 100, 100), (1, 1, 10**6), (2, 700, 714)],
)  # fmt: skip
@pytest.mark.parametrize("max_batches", [1, 8, 100, 5000])
def test_batch_shape_keeps_the_batches_under_the_budget_and_as_small_as_it_can(counts, max_batches):
    per_box = batch_shape(counts, max_batches)
    assert _boxes(counts, per_box) <= max_batches
    assert all(1 <= b <= n for b, n in zip(per_box, counts, strict=True))
    if math.prod(counts) <= max_batches:  # a grid within the budget: one tile per batch
        assert per_box == (1, 1, 1)
    # no axis can lose a tile without going over the budget
    for axis, b in enumerate(per_box):
        if b > 1:
            smaller = [*per_box[:axis], b - 1, *per_box[axis + 1 :]]
            assert _boxes(counts, smaller) > max_batches, (axis, per_box)


def test_batch_shape_gives_cubes_where_the_grid_is_one():
    # 100^3 blocks, at most 5000 batches: 6^3 boxes make 17^3 = 4913 (5^3 ones: 20^3 = 8000)
    assert batch_shape((100, 100, 100), 5000) == (6, 6, 6)
    assert batch_shape((1, 1, 10**6), 5000) == (1, 1, 200)  # a row: 5000 boxes of 200
    with pytest.raises(ValueError, match="at most 0 batches"):
        batch_shape((2, 2, 2), 0)


@pytest.mark.parametrize(("counts", "max_batches"), [((3, 5, 2), 4), ((7, 19, 23), 50)])
def test_auto_batches_cover_the_grid_once(counts, max_batches):
    tiles = tile_grid(counts, (1, 1, 1))  # one voxel a tile: a grid of `counts` tiles
    assert grid_counts(tiles) == counts
    batches = tile_batches(tiles, batch_shape(counts, max_batches))
    assert 1 < len(batches) <= max_batches
    assert sorted(t.id for b in batches.values() for t in b) == sorted(t.id for t in tiles)


def test_auto_blocks_per_job_resolves_auto_only():
    assert blocks_per_job("auto", (1, 1, 1)) == (1, 1, 1)
    assert blocks_per_job("auto", (10, 20, 25)) == (1, 1, 1)  # 5000 blocks: one per job
    assert _boxes((10, 20, 26), blocks_per_job("auto", (10, 20, 26))) <= AUTO_JOBS
    assert _boxes((100, 100, 100), blocks_per_job("auto", (100, 100, 100))) <= AUTO_JOBS
    # an explicit list stays as it is, even one that makes more jobs than auto would
    assert blocks_per_job([1, 2, 3], (100, 100, 100)) == (1, 2, 3)
    assert blocks_per_job([1, 1, 1], (100, 100, 100)) == (1, 1, 1)


def test_tiles_around_a_batch_are_its_tiles_neighbours_each_once():
    tiles = tile_grid((5, 6, 7), (1, 1, 1))
    grid = {tile.id: tile for tile in tiles}
    for per_job in ((1, 1, 1), (2, 3, 2), (5, 6, 7)):
        for batch in tile_batches(tiles, per_job).values():
            around = tiles_around(batch, grid)
            expected = {near.id for tile in batch for near in neighbours(tile, grid)}
            assert [t.id for t in around] == [t.id for t in tiles if t.id in expected]
