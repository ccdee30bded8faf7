"""The global affine: key points, matching, RANSAC, resampling, against known transforms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bigstream_core.accuracy import evaluate
from bigstream_core.api import apply_global_affine, ransac_affine
from bigstream_core.global_affine import GlobalAffineError, strongest
from bigstream_core.io import array_image
from bigstream_core.keypoints import COLUMNS, detect_blobs, log_sigmas
from bigstream_core.matching import best_unique, mutual_best
from bigstream_core.phantom import PhantomSpec, make_pair
from bigstream_core.transforms import affine_map

# A low-res level: cells of radius 2-6 voxels, anisotropic spacing (µm, z y x).
LOWRES_SPACING = (1.68, 1.84, 1.76)
PARAMS = dict(min_radius=2, max_radius=6, match_threshold=0.7, cc_radius=8, nspots=3000)


def lowres_pair(seed, rotation_deg, scale, shift_um, noise_sigma=10.0):
    """A pair generated directly at low-res size with a strong known affine."""
    spec = PhantomSpec(
        fixed_shape=(72, 140, 150),
        moving_shape=(80, 150, 140),
        spacing=LOWRES_SPACING,
        seed=seed,
        cell_density=0.25,
        radius_range_vox=(2.0, 6.0),
        rotation_deg=rotation_deg,
        scale=scale,
        shift_um=shift_um,
        noise_sigma=noise_sigma,
    )
    fixed, moving, truth = make_pair(spec)
    return (
        array_image(fixed.compute(), spec.spacing),
        array_image(moving.compute(), spec.spacing),
        truth,
    )


@pytest.mark.parametrize(
    ("seed", "rotation_deg", "scale", "shift_um"),
    [
        (1, (10.0, -4.0, 3.0), (1.08, 0.95, 1.02), (20.0, -60.0, 35.0)),
        (2, (-6.0, 8.0, -10.0), (0.92, 1.05, 1.08), (-30.0, 25.0, -60.0)),
        (3, (3.0, 3.0, 7.0), (1.0, 0.93, 0.97), (50.0, 10.0, 10.0)),
    ],
)
def test_recovers_strong_affines_to_a_fraction_of_a_voxel(seed, rotation_deg, scale, shift_um):
    fixed, moving, truth = lowres_pair(seed, rotation_deg, scale, shift_um)
    affine, report = ransac_affine(
        fixed, moving, None, None, **PARAMS, seed=seed, return_report=True
    )
    accuracy = evaluate(affine_map(affine), truth, fixed, moving)
    before = evaluate(lambda points: points, truth, fixed, moving)
    voxel = float(np.mean(LOWRES_SPACING))
    assert before["mean_um"] > 10 * voxel, "the case is not hard enough to mean anything"
    assert accuracy["mean_um"] < 0.2 * voxel, (accuracy, report)
    assert report["inliers"] >= 50


def test_same_input_same_affine():
    fixed, moving, _ = lowres_pair(4, (5.0, 2.0, -3.0), (1.02, 1.0, 0.98), (10.0, 5.0, -5.0))
    first = ransac_affine(fixed, moving, None, None, **PARAMS, seed=7)
    second = ransac_affine(fixed, moving, None, None, **PARAMS, seed=7)
    assert np.array_equal(first, second)


def test_apply_global_affine_pulls_moving_onto_fixed():
    fixed, moving, truth = lowres_pair(5, (6.0, -3.0, 2.0), (1.04, 0.97, 1.0), (8.0, -6.0, 4.0), 0)
    aligned = apply_global_affine(fixed, moving, None, None, truth.affine, order=1)
    assert aligned.shape == fixed.shape and aligned.dtype == moving.dtype
    reference = fixed.data.astype(float)
    inside = aligned > 0
    r = np.corrcoef(aligned[inside].astype(float), reference[inside])[0, 1]
    wrong = apply_global_affine(fixed, moving, None, None, np.eye(4))
    r_wrong = np.corrcoef(wrong[wrong > 0].astype(float), reference[wrong > 0])[0, 1]
    assert r > 0.99 > 0.6 > r_wrong
    # spacing given with arrays instead of Images gives the same result
    plain = apply_global_affine(
        fixed.data, moving.data, LOWRES_SPACING, LOWRES_SPACING, truth.affine, order=1
    )
    assert np.array_equal(plain, aligned)


def test_blobs_are_found_where_they_are_with_their_size():
    image = np.zeros((40, 48, 56), np.float32)
    grid = np.stack(np.meshgrid(*map(np.arange, image.shape), indexing="ij"), axis=-1)
    blobs = [((12.3, 15.6, 14.2), 3.0), ((27.5, 30.1, 40.8), 5.0)]
    for centre, radius in blobs:
        sigma = radius / np.sqrt(3)
        image += 1000 * np.exp(-((grid - centre) ** 2).sum(-1) / (2 * sigma**2))
    found = detect_blobs(image, 2, 6, 10).nlargest(2, "response")
    for centre, radius in blobs:
        distance = np.linalg.norm(found[["z", "y", "x"]].to_numpy() - centre, axis=1)
        best = found.iloc[int(distance.argmin())]
        assert distance.min() < 0.15
        # radius_vox is sqrt(3) times the best sigma, a ball's radius; a Gaussian profile of
        # sigma s responds most at sigma s * sqrt(2/3) (the maximum of sigma^2 LoG in 3D).
        # The scales are 1.32x apart: within half a step (15 %) of that.
        expected = radius * np.sqrt(2 / 3)
        assert abs(best["radius_vox"] - expected) <= 0.15 * expected


def test_matching_keeps_mutual_and_unique_partners():
    correlations = np.array([[0.9, 0.1, 0.2], [0.85, 0.3, 0.1], [0.1, 0.2, 0.5]], np.float32)
    assert mutual_best(correlations, 0.4).tolist() == [[0, 0], [2, 2]]
    pairs = np.array([[0, 0], [0, 1], [1, 0], [2, 2]])
    scores = np.array([0.9, 0.8, 0.95, 0.6])
    assert best_unique(pairs, scores, 0.7).tolist() == [[1, 0]]


@pytest.mark.parametrize(
    ("make_fixed", "message"),
    [
        (lambda shape, rng: np.full(shape, 100, np.uint16), "fixed image: 0 key points"),
        (
            lambda shape, rng: rng.normal(500, 50, shape).clip(0).astype(np.uint16),
            "matching",
        ),
    ],
)
def test_no_blobs_or_pure_noise_fail_with_the_image_and_the_counts(make_fixed, message):
    _, moving, _ = lowres_pair(6, (2.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    rng = np.random.default_rng(0)
    fixed = array_image(make_fixed((72, 140, 150), rng), LOWRES_SPACING)
    with pytest.raises(GlobalAffineError, match=message) as info:
        ransac_affine(fixed, moving, None, None, **PARAMS)
    assert any(char.isdigit() for char in str(info.value))


def test_bad_parameters_are_refused_with_their_values():
    fixed, moving, _ = lowres_pair(6, (2.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="min_radius=8, max_radius=6"):
        ransac_affine(fixed, moving, None, None, **{**PARAMS, "min_radius": 8})
    with pytest.raises(ValueError, match="nspots = 0"):
        ransac_affine(fixed, moving, None, None, **{**PARAMS, "nspots": 0})
    assert len(log_sigmas(2, 20, 10)) == 10 and len(log_sigmas(2, 4, 10)) == 3


def test_the_strongest_key_points_are_kept_one_table_at_a_time():
    """match_keypoints reads the tiles' tables one at a time (memory: nspots rows and one
    table, not the image's key points): the rows kept, ties included, are those of one
    stable sort of all the tables."""
    rng = np.random.default_rng(3)
    tables = []
    for tile in range(12):
        rows = int(rng.integers(0, 40))
        table = pd.DataFrame(rng.normal(size=(rows, len(COLUMNS))), columns=COLUMNS)
        table["response"] = rng.integers(0, 6, rows).astype(float)  # many ties
        table["tile"] = tile
        tables.append(table)
    for nspots in (1, 7, 50, 10_000):
        one_sort = pd.concat(tables, ignore_index=True).sort_values(
            "response", ascending=False, kind="stable"
        )
        expected = one_sort.head(nspots).reset_index(drop=True)
        pd.testing.assert_frame_equal(strongest(iter(tables), nspots), expected)
    assert len(strongest(iter([]), 5)) == 0 and list(strongest([])) == list(COLUMNS)
    pd.testing.assert_frame_equal(strongest(tables), one_sort.reset_index(drop=True))
