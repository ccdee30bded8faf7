"""Honest resource requests for the per-tile jobs, from tile geometry.

Checked against the jobs' measured peak (Snakemake ``benchmark:`` max_rss) on
the S and 2S benchmark pairs, 2026-11-26: key points 301-336 MB measured vs
567 MB asked for a 168^3-voxel halo; matching 531-654 vs 741 (5000 points,
cc_radius 12); a local tile 413-435 vs 475; a 128^3 resample block 546-565
(session 1, affines only) and 696 with a deformation (session 2) vs 790.

A Zarr or N5 input is a folder whose size says nothing (Snakemake reads ~0 MB),
so memory comes from how many voxels a job holds and in how many working
copies. Each estimate = Python + libraries baseline + arrays, times the retry
attempt (a job killed for memory is retried with more).
"""

from __future__ import annotations

BASELINE_MB = 350
KEYPOINT_WORKING_COPIES = 12  # float32: data, top-hat, smoothed, 3 responses, 3 local maxima, temps


def keypoint_job_mem_mb(halo_voxels: int, attempt: int = 1) -> int:
    """MB for LoG key-point detection on a tile of ``halo_voxels`` voxels."""
    arrays = halo_voxels * 4 * KEYPOINT_WORKING_COPIES / 2**20
    return int((BASELINE_MB + arrays) * attempt)


def match_job_mem_mb(nspots: int, cc_radius: int, attempt: int = 1) -> int:
    """MB for matching: int8 neighbourhoods of ``nspots`` points per image plus float32 batches."""
    width = 2 * cc_radius + 1
    vectors = 2 * nspots * width**3 / 2**20
    batches = (1000 + 6 * 512) * width**3 * 4 / 2**20  # coarse block, pair batches, extraction
    return int((BASELINE_MB + vectors + batches) * attempt)


LOCAL_TILE_WORKING_COPIES = 16  # keypoint arrays for two images + the warped moving tile
# float64 coordinates (3 x 3 temporaries) + values + source region + the displacement field's
# part over the block: a 128^3 block measured 696 MB with a deformation (2S), asked 790 MB.
RESAMPLE_BYTES_PER_VOXEL = 220


def local_tile_mem_mb(halo_voxels: int, attempt: int = 1) -> int:
    """MB for fitting one local affine tile of ``halo_voxels`` voxels."""
    arrays = halo_voxels * 4 * LOCAL_TILE_WORKING_COPIES / 2**20
    return int((BASELINE_MB + arrays) * attempt)


def resample_mem_mb(block_voxels: int, attempt: int = 1) -> int:
    """MB for resampling one output block of ``block_voxels`` voxels."""
    return int((BASELINE_MB + block_voxels * RESAMPLE_BYTES_PER_VOXEL / 2**20) * attempt)


# Deform blocks, measured 2026-11-26 (benchmarks, S and 2S pairs): 740-1055 MB for a
# 160^3 halo (4.1 M voxels), 620-834 MB for 3.3 M voxels, at either image size; asked:
# 1210 MB for 4.1 M voxels (15 % over the largest). Field regions (128^3): stitching
# 403-467 MB, inverting 695 MB (S) and 960 MB (2S: larger displacements, a wider margin
# read around the region); asked 1050 MB.
DEFORM_BYTES_PER_VOXEL = 220  # the moving block resampled (as above) + ~20 float32 working arrays
FIELD_REGION_BYTES_PER_VOXEL = 350  # float64 points, displacements (3 each), the field read


def deform_mem_mb(halo_voxels: int, attempt: int = 1) -> int:
    """MB for the deformable registration of one block of ``halo_voxels`` voxels."""
    return int((BASELINE_MB + halo_voxels * DEFORM_BYTES_PER_VOXEL / 2**20) * attempt)


def field_region_mem_mb(core_voxels: int, attempt: int = 1) -> int:
    """MB for stitching or inverting one region of the displacement field."""
    return int((BASELINE_MB + core_voxels * FIELD_REGION_BYTES_PER_VOXEL / 2**20) * attempt)
