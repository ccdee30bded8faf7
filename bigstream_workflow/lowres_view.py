"""The low-res inspection images ("views"): the moving image's low-res level in the fixed
low-res grid (z y x, µm) under the transform so far, as OME-Zarr, for napari and the QC
report's overlays. The view ``global`` is under the global affine, ``local`` under the
local affines too.

A view is written block by block, so no job holds or goes through the whole level: the
store is made empty (:func:`create_view`), each job of a batch of blocks
(:func:`view_batches`) resamples its blocks into level 0 and writes their 2x mean into
level 1 (:func:`write_view_blocks`; a block is whole chunks of both, so jobs never share
a chunk), and one last job fills the coarser levels from level 1 (1/8 of the voxels) and
writes the OME metadata (:func:`finish_view`). Until then the store is no OME-Zarr image.
"""

from __future__ import annotations

import logging

import zarr

from bigstream_core.io import Image, create_ome_zarr, downsample_level, finish_ome_zarr
from bigstream_core.io.pyramid import downsampled_shape, level_factors
from bigstream_core.resample import PointMap, resample_region
from bigstream_core.tiling import Tile, budget_batches

VIEW_BLOCK = (128, 128, 128)
"""Fixed low-res voxels (z, y, x) of a view's block: whole chunks (64^3, the default) of
level 0 and, halved, of level 1, so the job that resamples a block writes both levels of
it and no chunk of another block's. Memory: about 80 bytes per block voxel, ~170 MB."""
BLOCK_LEVELS = 2
"""The levels a block job writes (0 and 1); the closing job fills the coarser ones."""
VIEW_VOXELS_PER_JOB = 2**26
"""Low-res voxels (about 67 M, give or take a block's rounding) one job of a view covers:
one job on the demo and the test pairs and up to a 256 x 512 x 512 level, a few at a
300 x 500 x 900 level, tens at a terabyte's (1-8 G voxels)."""


def view_batches(shape: tuple[int, int, int], max_jobs: int = 5000) -> dict[str, list[Tile]]:
    """The blocks of a view of the fixed low-res ``shape`` (z, y, x), batched for about
    :data:`VIEW_VOXELS_PER_JOB` voxels per job, at most ``max_jobs`` jobs: batch -> blocks."""
    return budget_batches(shape, VIEW_BLOCK, VIEW_VOXELS_PER_JOB, max_jobs)


def create_view(store: str, fixed: Image, moving: Image) -> zarr.Group:
    """Create (replace) the empty view ``store``: every pyramid level of the fixed low-res
    grid, in the moving image's dtype, without OME metadata."""
    return create_ome_zarr(store, fixed.shape, moving.dtype)


def block_core(core, shape: tuple[int, int, int], level: int):
    """The z, y, x voxel ranges at pyramid level ``level`` of the level-0 ranges ``core``
    of an image of ``shape`` (each level halves an axis longer than 1, rounding up)."""
    for _ in range(level):
        factors = level_factors(shape)
        core = [(-(-a // f), -(-b // f)) for (a, b), f in zip(core, factors, strict=True)]
        shape = downsampled_shape(shape, factors)
    return tuple(core)


def write_view_blocks(
    store: str,
    fixed: Image,
    moving: Image,
    transform: PointMap,
    tiles: list[Tile],
    log: logging.Logger,
) -> list[str]:
    """Resample each block of ``tiles`` (cores on the fixed low-res grid, whole multiples of
    :data:`VIEW_BLOCK`) of the moving low-res image through ``transform`` (linear) into
    level 0 of the view ``store``, then write its 2x mean into level 1 (if the view has
    one). Returns the blocks' ids."""
    group = zarr.open_group(store, mode="r+")
    level0 = group["0"]
    levels = min(BLOCK_LEVELS, len(list(group.array_keys())))
    for number, tile in enumerate(tiles, start=1):
        region = tile.slices("core")
        level0[region] = resample_region(moving, transform, region, fixed.spacing, fixed.origin)
        for level in range(1, levels):
            downsample_level(store, level, block_core(tile.core, fixed.shape, level))
        log.info("block %d/%d %s: %s", number, len(tiles), tile.id, tile.core)
    return [tile.id for tile in tiles]


def finish_view(store: str, fixed: Image, description: str, attrs: dict) -> int:
    """Fill the view's levels above :data:`BLOCK_LEVELS` - 1 from the one below (the
    first from level 1: 1/8 of the level's voxels), then write its OME metadata (name
    ``moving_lowres (<description>)``, ``attrs`` beside it). Returns its number of levels."""
    levels = len(list(zarr.open_group(store, mode="r").array_keys()))
    for level in range(BLOCK_LEVELS, levels):
        downsample_level(store, level)
    finish_ome_zarr(store, fixed.spacing, fixed.origin, name=f"moving_lowres ({description})",
                    attrs=attrs)  # fmt: skip
    return levels
