"""Resampling a block of every channel of a round into a (sharded) multichannel store."""

import hashlib

import numpy as np
import pytest
import zarr

from bigstream_core.io import create_ome_zarr, open_image, write_n5
from bigstream_core.resample import resample_block
from bigstream_core.tiling import tile_grid


def test_every_channel_of_a_block_lands_in_its_own_shards_with_one_digest(tmp_path):
    """Two channels (uint8, and uint16 = 300 x it: the store takes uint16), a shift of
    exactly 2 voxels along x: each channel's block is the image shifted, written into its
    shards; the manifest's digest is that of the block's bytes over both channels; a block
    that is not whole shards is refused."""
    rng = np.random.default_rng(3)
    first = rng.integers(1, 200, (32, 32, 32)).astype(np.uint8)
    write_n5(first, tmp_path / "m.n5", "c0", (1.0, 1.0, 1.0))
    write_n5(first.astype(np.uint16) * 300, tmp_path / "m.n5", "c1", (1.0, 1.0, 1.0))
    channels = [open_image(tmp_path / "m.n5", name) for name in ("c0", "c1")]
    store = tmp_path / "aligned.ome.zarr"
    create_ome_zarr(store, (32, 32, 32), np.uint16, (8, 8, 8), channels=2, version="0.5",
                    shard=(16, 16, 16))  # fmt: skip

    def shift(points):
        return points + np.array([0.0, 0.0, 2.0])

    tiles = tile_grid((32, 32, 32), (16, 16, 16))
    manifests = [resample_block(str(store), channels, channels[0], shift, tile) for tile in tiles]
    level = zarr.open_array(store, path="0", mode="r")
    expected = np.zeros((32, 32, 32), np.uint16)
    expected[:, :, :30] = first[:, :, 2:]
    np.testing.assert_array_equal(level[0], expected)
    np.testing.assert_array_equal(level[1], expected * 300)
    for tile, manifest in zip(tiles, manifests, strict=True):
        block = level[(slice(None), *tile.slices("core"))]
        assert manifest["sha256"] == hashlib.sha256(block.tobytes()).hexdigest()
    (odd,) = tile_grid((32, 32, 32), (8, 8, 40))[:1]
    with pytest.raises(ValueError, match="is not made of whole chunks"):
        resample_block(str(store), channels, channels[0], shift, odd)
