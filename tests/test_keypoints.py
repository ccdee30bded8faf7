"""Key points on a scale pyramid: where they are, what they cost, how tiles are sized."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from bigstream_core import keypoints
from bigstream_core.keypoints import (
    JOB_OCTAVE_VOXELS,
    JOB_READ_VOXELS,
    auto_blocksize,
    detect_blobs,
    first_octave,
    keypoint_grid,
)
from bigstream_core.phantom import PhantomSpec, make_cells, make_pair

# Big cells (radii 6-20 voxels, the bigstream tutorial's key-point radii) in a volume of
# the affine stages' level, rendered at that level's size.
BIG_CELLS = PhantomSpec(
    fixed_shape=(96, 128, 128),
    moving_shape=(96, 128, 128),
    spacing=(1.0, 1.0, 1.0),
    tissue_extent=(1.2, 1.2, 1.2),
    cell_density=0.02,
    radius_range_vox=(6.0, 20.0),
    brightness_range=(600.0, 2000.0),
)


@pytest.fixture(scope="module")
def big_cells():
    fixed, _, _ = make_pair(BIG_CELLS)
    return fixed.compute(), make_cells(BIG_CELLS)


def single_resolution(monkeypatch):
    """Make every scale search the full resolution (the detector before the pyramid)."""
    monkeypatch.setattr(keypoints, "SIGMA_FLOOR", 1e9)


def test_radii_6_to_20_never_filter_the_full_resolution(big_cells, monkeypatch):
    image, _ = big_cells
    shapes = []
    gaussian = ndimage.gaussian_filter

    def recorded(data, *args, **kwargs):
        shapes.append(data.shape)
        return gaussian(data, *args, **kwargs)

    monkeypatch.setattr(keypoints.ndimage, "gaussian_filter", recorded)
    detect_blobs(image, 6, 20)
    assert first_octave(6) == 1
    assert shapes and image.shape not in shapes  # the finest octave averages 2 voxels per axis
    assert max(math.prod(shape) for shape in shapes) <= image.size / 8 + image.size / 64
    shapes.clear()
    single_resolution(monkeypatch)
    detect_blobs(image, 6, 20)
    assert image.shape in shapes  # the recording sees a full-resolution search


def test_octaves_find_the_strong_blobs_where_full_resolution_does(big_cells, monkeypatch):
    image, cells = big_cells
    pyramid = detect_blobs(image, 6, 20).head(40)
    single_resolution(monkeypatch)
    reference = detect_blobs(image, 6, 20).head(40)
    columns = ["z", "y", "x"]
    distance, _ = cKDTree(pyramid[columns].to_numpy()).query(reference[columns].to_numpy())
    # measured: 19 of 22 within 0.5 voxel, median 0.05 (the others sit on a flat top)
    assert np.mean(distance < 0.5) >= 0.85 and np.median(distance) < 0.2, np.sort(distance)
    # and both against the cells' true centres (voxels = µm here), isolated cells only
    centres = cells.centres
    neighbour, _ = cKDTree(centres).query(centres, k=2)
    errors = {}
    for name, found in (("pyramid", pyramid), ("full resolution", reference)):
        error, index = cKDTree(centres).query(found[columns].to_numpy())
        isolated = (neighbour[index, 1] > 30) & (error < 3)
        errors[name] = float(np.median(error[isolated]))
    # measured: median 0.34 voxel from the truth, full resolution 0.30 (flat-topped big cells)
    assert errors["pyramid"] < 0.4, errors
    assert errors["pyramid"] <= errors["full resolution"] + 0.1, errors


def test_a_blob_of_any_size_is_reported_once_at_its_scale():
    image = np.zeros((64, 64, 96), np.float32)
    grid = np.stack(np.meshgrid(*map(np.arange, image.shape), indexing="ij"), axis=-1)
    blobs = [((32.0, 32.0, 24.0), 7.0), ((32.0, 32.0, 70.0), 16.0)]  # two octaves apart
    for centre, radius in blobs:
        sigma = radius / np.sqrt(3)
        image += 1000 * np.exp(-((grid - centre) ** 2).sum(-1) / (2 * sigma**2))
    found = detect_blobs(image, 6, 20)
    for centre, radius in blobs:
        near = found[np.linalg.norm(found[["z", "y", "x"]].to_numpy() - centre, axis=1) < radius]
        assert len(near) == 1, near
        # a Gaussian profile of sigma s responds most at sigma s * sqrt(2/3) (3D sigma^2 LoG)
        expected = radius * np.sqrt(2 / 3)
        assert abs(near["radius_vox"].iloc[0] - expected) <= 0.15 * expected
        assert np.linalg.norm(near[["z", "y", "x"]].to_numpy()[0] - centre) < 0.3


@pytest.mark.parametrize(("radii", "tiles"), [((6, 20), 1), ((1.5, 5), 2)])
def test_a_low_res_level_of_the_tutorial_size_is_a_job_or_two(radii, tiles):
    # the 8S pair's low-res level: enough work for a job, not a fan-out of 1-second jobs
    assert len(keypoint_grid((150, 250, 450), "auto", *radii)) == tiles


@pytest.mark.parametrize("radii", [(6, 20), (1.5, 5), (3, 10)])
def test_automatic_tiles_bound_a_jobs_work_whatever_the_image(radii):
    for shape in [(600, 1000, 1800), (2000, 8000, 8000), (40, 9000, 9000)]:
        tiles = keypoint_grid(shape, "auto", *radii)
        largest = max(tile.halo_voxels for tile in tiles)
        assert largest <= JOB_READ_VOXELS
        assert largest / 8 ** first_octave(radii[0]) <= JOB_OCTAVE_VOXELS * 1.05
        assert len(tiles) >= math.prod(shape) / JOB_READ_VOXELS  # a big image fans out
    assert auto_blocksize((40, 80, 80), *radii) == (40, 80, 80)  # a small one is one tile


def test_a_bad_blocksize_is_named():
    with pytest.raises(ValueError, match="blocksize 'big'"):
        keypoint_grid((10, 10, 10), "big", 1, 2)
