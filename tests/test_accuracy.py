"""The accuracy's foreground NCC in parts: partial sums per region, reduced over any tiling,
and the batches of low-res blocks the workflow gives one job each."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from bigstream_core.accuracy import (
    NCC_BLOCK,
    NCC_VOXELS_PER_JOB,
    batch_ncc_sums,
    foreground_level,
    foreground_ncc,
    ncc_batches,
    ncc_from_sums,
    reduce_ncc_records,
    region_ncc_sums,
    with_identity,
)
from bigstream_core.io import array_image
from bigstream_core.tiling import grid_counts, tile_batches, tile_grid
from bigstream_core.transforms import affine_map

SPACING = (2.0, 1.0, 1.5)


@pytest.fixture(scope="module")
def pair():
    """A smooth blobby fixed image with a dark background and a moving image that is not a
    plain copy of it (a shifted, noisier version), both uint16, of odd shape."""
    rng = np.random.default_rng(3)
    base = gaussian_filter(rng.normal(size=(21, 37, 43)), 2.0)
    fixed = np.clip(100 + 2000 * base, 0, None).astype(np.uint16)
    moving = np.roll(fixed, (1, -2, 3), axis=(0, 1, 2)).astype(float)
    moving = np.clip(moving + rng.normal(0, 20, moving.shape), 0, None).astype(np.uint16)
    return array_image(fixed, SPACING, (1.0, 0.5, 0.0)), array_image(moving, SPACING)


def affine():
    matrix = np.eye(4)
    matrix[:3, :3] += [[0.01, 0.02, 0.0], [-0.01, 0.0, 0.03], [0.0, 0.01, -0.02]]
    matrix[:3, 3] = [1.3, -2.1, 3.7]
    return affine_map(matrix)


def warp(points):
    """A smooth non-linear map (µm), so the transform is not linear between voxels."""
    return points + 1.5 * np.sin(points[:, [1, 2, 0]] / 9.0)


def summed(fixed, moving, transform, block, level, step):
    sums = sum(
        region_ncc_sums(fixed, moving, [transform], tile.slices("core"), level, step)
        for tile in tile_grid(fixed.shape, block)
    )
    return ncc_from_sums(sums)


@pytest.mark.parametrize(("transform", "step"), [(affine(), 2), (warp, 1)])
@pytest.mark.parametrize("block", [(5, 7, 9), (21, 37, 43), (3, 50, 11), (64, 128, 128)])
def test_partial_sums_over_any_tiling_reduce_to_the_whole_image_ncc(pair, transform, step, block):
    fixed, moving = pair
    whole = foreground_ncc(fixed, moving, transform, block=fixed.shape, step=step)
    level = foreground_level(fixed)
    assert 0.1 < whole < 0.99  # a correlation, not a degenerate one
    assert summed(fixed, moving, transform, block, level, step) == pytest.approx(whole, rel=1e-12)
    assert foreground_ncc(fixed, moving, transform, block=block, step=step) == pytest.approx(
        whole, rel=1e-12
    )


def test_batched_jobs_reduced_give_every_stage_its_foreground_ncc(pair):
    """Blocks batched as the workflow batches them, each batch's sums as a job writes them,
    then reduced: the NCC of every stage as :func:`foreground_ncc` computes it alone."""
    fixed, moving = pair
    stages = with_identity([("affine", affine()), ("warp", warp)])
    level = foreground_level(fixed)
    tiles = tile_grid(fixed.shape, (8, 16, 16))
    batches = tile_batches(tiles, (2, 1, 2))
    assert len(batches) > 1
    records = [
        {"level": level, "blocks": [t.id for t in batch],
         "sums": batch_ncc_sums(fixed, moving, stages, [t.slices("core") for t in batch], level)}
        for batch in batches.values()
    ]  # fmt: skip
    ncc = reduce_ncc_records(records, level, len(tiles))
    assert list(ncc) == [name for name, _ in stages]
    for name, transform in stages:
        assert ncc[name] == pytest.approx(foreground_ncc(fixed, moving, transform), rel=1e-12)
    assert ncc["none (before registration)"] < ncc["affine"]  # the shift is partly undone
    # a lost, a repeated or an other level's record is refused, not summed
    with pytest.raises(ValueError, match="expected each of"):
        reduce_ncc_records(records[1:], level, len(tiles))
    with pytest.raises(ValueError, match="expected each of"):
        reduce_ncc_records([*records, records[0]], level, len(tiles))
    with pytest.raises(ValueError, match="foreground level"):
        reduce_ncc_records(records, level + 1, len(tiles))


def test_a_tiny_case_by_hand():
    """Fixed 0 1 2 3 (voxel 0, the sample's one voxel, is the level: 0, so the foreground is
    1 2 3), moving 9 1 3 2 on the same grid, no transform: sums n = 3, a 6, b 6, aa 14,
    bb 14, ab 13; NCC = (13 - 6 * 6 / 3) / sqrt((14 - 12) * (14 - 12)) = 1 / 2."""
    fixed = array_image(np.array([[[0, 1, 2, 3]]], np.uint16), (1.0, 1.0, 1.0))
    moving = array_image(np.array([[[9, 1, 3, 2]]], np.uint16), (1.0, 1.0, 1.0))
    assert foreground_level(fixed) == 0
    sums = region_ncc_sums(fixed, moving, [lambda p: p], (slice(0, 1),) * 2 + (slice(0, 4),), 0)
    assert sums[0] == pytest.approx([3, 6, 6, 14, 14, 13], abs=1e-9)
    assert ncc_from_sums(sums) == pytest.approx(0.5, abs=1e-9)
    assert foreground_ncc(fixed, moving, lambda p: p) == pytest.approx(0.5, abs=1e-9)
    # two regions, added
    parts = [region_ncc_sums(fixed, moving, [lambda p: p], (slice(0, 1), slice(0, 1), x), 0)
             for x in (slice(0, 2), slice(2, 4))]  # fmt: skip
    assert ncc_from_sums(np.concatenate(parts)) == pytest.approx(0.5, abs=1e-9)


@pytest.mark.parametrize(
    ("shape", "jobs"),
    [((40, 80, 80), 1), ((75, 125, 225), 1), ((150, 250, 450), 1), ((300, 500, 900), 3),
     ((1200, 2000, 3600), 120)],
)  # fmt: skip
def test_the_ncc_blocks_are_batched_to_a_voxel_budget(shape, jobs):
    """One NCC job for the demo and test pairs, a few for a mid-size level, many only for a
    terabyte's; every block in exactly one batch, batches of neighbouring blocks."""
    batches = ncc_batches(shape)
    assert len(batches) == jobs
    blocks = [tile for batch in batches.values() for tile in batch]
    assert sorted(tile.id for tile in blocks) == sorted(
        tile.id for tile in tile_grid(shape, NCC_BLOCK)
    )
    assert len(batches) <= max(1, math.ceil(math.prod(shape) / NCC_VOXELS_PER_JOB))
    largest = max(sum(tile.halo_voxels for tile in batch) for batch in batches.values())
    assert largest <= 1.3 * NCC_VOXELS_PER_JOB or len(batches) == 1
    assert grid_counts(blocks) == grid_counts(tile_grid(shape, NCC_BLOCK))
