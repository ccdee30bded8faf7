"""Honest resource requests for the per-tile jobs, from tile geometry.

Checked against the jobs' measured peak (Snakemake ``benchmark:`` max_rss) on
the S and 2S benchmark pairs, 2026-11-26: key points 301-336 MB measured vs
567 MB asked for a 168^3-voxel halo; matching 531-654 vs 741 (5000 points,
cc_radius 12; 841 since the tables' term, session 17); a local tile 413-435 vs 475.
Session 3 (2S pair, the 256^3 defaults):
a 256^3 resample block 1271 MB measured vs 1630 asked; a deform block of
288 x 288 x 320 halo voxels 847 vs 1159; a 256^3 field region (stitching) 1069
vs 1367.

A Zarr or N5 input is a folder whose size says nothing (Snakemake reads ~0 MB),
so memory comes from how many voxels a job holds and in how many working
copies. Each estimate = Python + libraries baseline + arrays, times the retry
attempt (a job killed for memory is retried with more; attempts that failed on a full or
unwritable disk do not count: bigstream_workflow.retries).
"""

from __future__ import annotations

BASELINE_MB = 350
KEYPOINT_WORKING_COPIES = 12  # float32 on the finest octave: data, top-hat, smoothed, responses...
KEYPOINT_READ_BYTES = 4  # per voxel read: the tile as read (up to float32)


def keypoint_job_mem_mb(halo_voxels: int, first_octave: int = 0, attempt: int = 1) -> int:
    """MB for LoG key-point detection on a tile of ``halo_voxels`` voxels whose finest
    searched octave averages ``2^first_octave`` voxels per axis (the filtering happens there)."""
    octave_voxels = halo_voxels / 8**first_octave
    arrays = halo_voxels * KEYPOINT_READ_BYTES + octave_voxels * 4 * KEYPOINT_WORKING_COPIES
    return int((BASELINE_MB + arrays / 2**20) * attempt)


# Reading the key-point tables one at a time (pandas, pyarrow): the allocator keeps freed
# pages, 85-90 MB for the 64S run's 12 tables per image, levelling off with their number
# (1 table: 41 MB, 4: 75 MB; a table is one key-point tile's, capped by `blocksize: auto`).
MATCH_TABLES_MB = 100


def match_job_mem_mb(nspots: int, cc_radius: int, attempt: int = 1) -> int:
    """MB for matching: the key-point tables as read, int8 neighbourhoods of ``nspots`` points
    per image plus float32 batches."""
    width = 2 * cc_radius + 1
    vectors = 2 * nspots * width**3 / 2**20
    batches = (1000 + 6 * 512) * width**3 * 4 / 2**20  # coarse block, pair batches, extraction
    return int((BASELINE_MB + MATCH_TABLES_MB + vectors + batches) * attempt)


LOCAL_TILE_WORKING_COPIES = 16  # keypoint arrays for two images + the warped moving tile
# float32 moving coordinates (3 per voxel), values, the cast, the moving window, the output
# and its digest; the transform itself is computed slab by slab (bounded, in the baseline).
RESAMPLE_BYTES_PER_VOXEL = 80


def local_tile_mem_mb(halo_voxels: int, attempt: int = 1) -> int:
    """MB for fitting one local affine tile of ``halo_voxels`` voxels."""
    arrays = halo_voxels * 4 * LOCAL_TILE_WORKING_COPIES / 2**20
    return int((BASELINE_MB + arrays) * attempt)


def resample_mem_mb(block_voxels: int, attempt: int = 1) -> int:
    """MB for resampling one output block of ``block_voxels`` voxels."""
    return int((BASELINE_MB + block_voxels * RESAMPLE_BYTES_PER_VOXEL / 2**20) * attempt)


# Pyramid blocks: one write unit (chunk or shard) of the level at a time, per channel: its
# float64 sum and mean, the block in its dtype, and the source slab it reads (8x its voxels
# in z slabs of one source chunk), with an edge-padded copy at the far ends.
PYRAMID_BYTES_PER_VOXEL = 48


def pyramid_mem_mb(unit_voxels: int, attempt: int = 1) -> int:
    """MB for a pyramid job writing units (chunks or shards) of ``unit_voxels`` voxels."""
    return int((BASELINE_MB + unit_voxels * PYRAMID_BYTES_PER_VOXEL / 2**20) * attempt)


# Deform blocks (session 3, 2S pair): 847 MB for a 288 x 288 x 320 halo (26.5 M voxels),
# 354 MB for a 160^3 one: the fixed block and the moving window in float32, one smoothed
# copy, and ~25 float32 arrays at the finest level (1/8 of the voxels). Field regions, per
# node of the stored field (every voxel then): the region's field, each neighbour's part
# at its nodes, the Jacobian slab by slab (and for the inverse the forward field around the
# region): 1069 MB stitching a 256^3 region at every voxel; plus, for the inverse, the
# working arrays of one slab of ``displacement.SLAB_POINTS`` points, whatever the region's
# size. Measured on a 256^3 region of a smooth synthetic field (2026-12-03): stitching 220 MB
# on every 2nd voxel (128^3 nodes), 788 MB at every voxel; inverting 533 MB and 1232 MB.
DEFORM_BYTES_PER_VOXEL = 32
FIELD_REGION_BYTES_PER_NODE = 64
INVERT_SLAB_MB = 300


def deform_mem_mb(halo_voxels: int, attempt: int = 1) -> int:
    """MB for the deformable registration of one block of ``halo_voxels`` voxels."""
    return int((BASELINE_MB + halo_voxels * DEFORM_BYTES_PER_VOXEL / 2**20) * attempt)


def field_region_mem_mb(core_nodes: int, attempt: int = 1) -> int:
    """MB for stitching or inverting one region of the displacement field, ``core_nodes``
    nodes of the stored field (its voxels / ``deform.field_shrink``^3)."""
    arrays = INVERT_SLAB_MB + core_nodes * FIELD_REGION_BYTES_PER_NODE / 2**20
    return int((BASELINE_MB + arrays) * attempt)


# Affine refinement, read by windows (bigstream_core.intensity_refine): per level a pool of
# POOL x samples usable voxels (positions, values, cube and window ids) with its blocks'
# moving windows, the objective's arrays, and one window read with the smoothing's support
# (largest at the coarsest level: its edge grows with the shrink); nothing follows the
# images' size. Measured: benchmarks/results/2026-12-03-refine-windows.md.
REFINE_BYTES_PER_SAMPLE = 1500
REFINE_WINDOW_EDGE = 48  # level voxels: a block's moving window with its margin and halo
REFINE_BYTES_PER_READ_VOXEL = 16  # as read, in float32, smoothed, the filter's buffer


def refine_mem_mb(samples: int, coarsest_shrink: int, attempt: int = 1) -> int:
    """MB for refining an affine by intensities, ``samples`` per level, the coarsest level
    shrinking the image ``coarsest_shrink`` times (whatever the images' size)."""
    read = (REFINE_WINDOW_EDGE * coarsest_shrink) ** 3 * REFINE_BYTES_PER_READ_VOXEL
    return int((BASELINE_MB + (samples * REFINE_BYTES_PER_SAMPLE + read) / 2**20) * attempt)


# Masks (bigstream_core.masks): the automatic one holds one block read with the Gaussian's
# support (as read, float32, smoothed, the filter's buffer) and the threshold's sample
# (float32, and its concatenation); a mask file is placed one plane of the low-res grid at a
# time (the mask's plane as read, the nearest-voxel plane).
MASK_BYTES_PER_BLOCK_VOXEL = 16
MASK_BYTES_PER_SAMPLE = 8
MASK_BYTES_PER_PLANE_VOXEL = 4


def mask_mem_mb(block_voxels: int, sample_voxels: int, plane_voxels: int = 0,
                attempt: int = 1) -> int:  # fmt: skip
    """MB for writing one mask: blocks of ``block_voxels`` voxels with their halo and a
    threshold sample of ``sample_voxels`` (the automatic mask), or planes of
    ``plane_voxels`` (a mask file)."""
    arrays = (
        block_voxels * MASK_BYTES_PER_BLOCK_VOXEL
        + sample_voxels * MASK_BYTES_PER_SAMPLE
        + plane_voxels * MASK_BYTES_PER_PLANE_VOXEL
    )
    return int((BASELINE_MB + arrays / 2**20) * attempt)


# The accuracy's foreground NCC (bigstream_core.accuracy), one low-res block at a time: the
# fixed block in float64 and its foreground mask, the moving block pulled onto it (as
# resampling: coordinates, window, values); its foreground level, from a strided sample
# (float32, float64 copy) read one block at a time (as read, float32).
ACCURACY_BYTES_PER_BLOCK_VOXEL = RESAMPLE_BYTES_PER_VOXEL + 16
ACCURACY_BYTES_PER_SAMPLE = 16


def accuracy_ncc_mem_mb(block_voxels: int, attempt: int = 1) -> int:
    """MB for the foreground NCC's partial sums over blocks of ``block_voxels`` voxels."""
    return int((BASELINE_MB + block_voxels * ACCURACY_BYTES_PER_BLOCK_VOXEL / 2**20) * attempt)


def accuracy_level_mem_mb(block_voxels: int, sample_voxels: int, attempt: int = 1) -> int:
    """MB for the foreground level: a sample of ``sample_voxels`` voxels, read from blocks of
    ``block_voxels`` voxels."""
    arrays = block_voxels * 8 + sample_voxels * ACCURACY_BYTES_PER_SAMPLE
    return int((BASELINE_MB + arrays / 2**20) * attempt)


# Runtimes (minutes), generous: a fixed start-up allowance plus the voxels a job goes
# through at a rate well below what its work measures on one core, times the retry attempt.
# The rates hold for the large batches of `blocks_per_job: auto` too, where the start-up
# allowance no longer hides them: on the 8S pair (session 11, job seconds on a 2-core
# workstation) resampling ran 0.85 Mvoxel/s, stitching 1.5, the deformation about 0.9 per
# halo voxel (halo voxels estimated from the grid, not counted); the rates below are 2.5x
# to 3.5x slower. By the same figures (computed, not run) the first rates, 1 and 0.1
# Mvoxel/s, asked a 210-block resample batch for less time than it takes, a deform batch
# for 12x more.
VOXELS_PER_MINUTE = 20_000_000  # about 0.33 Mvoxel/s: key points, local tiles, resampling, fields
DEFORM_VOXELS_PER_MINUTE = 15_000_000  # 0.25 Mvoxel/s: the deformable registration


def runtime_min(
    voxels: int, attempt: int = 1, start: int = 5, rate: int = VOXELS_PER_MINUTE
) -> int:
    """Minutes for a job that goes through ``voxels`` voxels at ``rate`` per minute after
    ``start`` minutes (key points, a local tile, resampling, stitching or inverting)."""
    return (start + voxels // rate) * attempt


def deform_runtime_min(voxels: int, attempt: int = 1) -> int:
    """Minutes for a deform job registering blocks of ``voxels`` halo voxels in all."""
    return runtime_min(voxels, attempt, start=10, rate=DEFORM_VOXELS_PER_MINUTE)


def settle_runtime_min(tiles: int, attempt: int = 1) -> int:
    """Minutes to settle ``tiles`` local tiles: up to every tile filled and proved, ~1 s each."""
    return (10 + tiles // 60) * attempt
