"""Tile grids: cores partition the image, halos add the overlap, ids round-trip."""

import numpy as np
import pytest

from bigstream_core.tiling import (
    batch_id,
    grid_table,
    node_tile,
    overlap_voxels,
    parse_tile_id,
    tile_batches,
    tile_grid,
)


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
