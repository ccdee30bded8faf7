"""The workflow through real Snakemake runs (CLI, profiles/local), on synthetic pairs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from skimage.filters import threshold_otsu

from bigstream_core.accuracy import grid_points, points_inside
from bigstream_core.io import open_image
from bigstream_core.phantom import GroundTruth
from bigstream_core.tiling import tile_grid
from bigstream_core.transforms import apply_affine, read_affine
from tests.conftest import demo_global_affine, pair_config, run_snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(small_pair, tmp_path_factory):
    """One complete run of the workflow on the small pair, with the demo's parameters."""
    work = tmp_path_factory.mktemp("run")
    config = pair_config(small_pair, work / "results", global_affine=demo_global_affine())
    result = run_snakemake(work, config)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, config, result


def test_dry_run_lists_every_job_without_writing(tiny_pair, tmp_path):
    config = pair_config(tiny_pair, tmp_path / "results")
    result = run_snakemake(tmp_path, config, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    for rule in ("plan", "detect_keypoints", "match_keypoints", "fit_global_affine", "all"):
        assert rule in result.stdout
    assert not (tmp_path / "results").exists()


def test_plan_records_images_in_zyx_and_the_grids(finished_run, small_pair):
    work, config, _ = finished_run
    plan = json.loads((work / "results" / "plan" / "images.json").read_text())
    for role in ("fixed", "moving"):
        for level in ("lowres", "highres"):
            image = open_image(small_pair / f"{role}.n5", level)
            recorded = plan["images"][role][level]
            assert recorded["shape"] == list(image.shape)
            assert recorded["spacing_um"] == pytest.approx(image.spacing)
    # the N5 attributes are x, y, z; the plan is z, y, x
    attrs = json.loads((small_pair / "fixed.n5" / "highres" / "attributes.json").read_text())
    assert plan["images"]["fixed"]["highres"]["shape"] == attrs["dimensions"][::-1]
    grid = pd.read_csv(work / "results" / "plan" / "grid_keypoints_moving.tsv", sep="\t")
    lowres = open_image(small_pair / "moving.n5", "lowres")
    blocksize, halo = config["global_affine"]["blocksize"], 10  # 2 * max_radius
    expected = tile_grid(lowres.shape, blocksize, (halo,) * 3)
    assert len(expected) > 1
    assert list(grid["tile"]) == [tile.id for tile in expected]
    assert plan["grids"]["keypoints_moving"] == len(expected)
    assert plan["provenance"]["config"]["global_affine"]["blocksize"] == blocksize
    assert plan["provenance"]["versions"]["bigstream-workflow"]


def test_global_affine_recovers_the_known_transform(finished_run, small_pair):
    work, _, _ = finished_run
    matrix = read_affine(work / "results" / "global" / "affine.txt")
    truth = GroundTruth.from_json(small_pair / "truth.json")
    fixed = open_image(small_pair / "fixed.n5", "lowres")
    moving = open_image(small_pair / "moving.n5", "lowres")
    points = grid_points(fixed)
    points = points[points_inside(truth(points), moving)]
    error = np.linalg.norm(apply_affine(matrix, points) - truth(points), axis=1)
    before = np.linalg.norm(points - truth(points), axis=1)
    low_res_voxel = float(np.mean(fixed.spacing))
    assert before.mean() > 2 * low_res_voxel  # the pair starts apart
    assert error.mean() < 0.35 * low_res_voxel
    xyz = read_affine(work / "results" / "global" / "affine_xyz.txt")
    assert np.allclose(apply_affine(xyz, points[:, ::-1])[:, ::-1], apply_affine(matrix, points))
    report = json.loads((work / "results" / "global" / "report.json").read_text())
    assert report["status"] == "ok" and report["inliers"] >= 50
    # the accuracy report agrees with this independent computation over the foreground
    accuracy = json.loads((work / "results" / "qc" / "accuracy.json").read_text())
    highres_fixed = open_image(small_pair / "fixed.n5", "highres")
    highres_moving = open_image(small_pair / "moving.n5", "highres")
    points = grid_points(highres_fixed, 24)
    voxel = np.rint(points / np.asarray(highres_fixed.spacing)).astype(int)
    values = highres_fixed.read((slice(None),) * 3)[tuple(voxel.T)].astype(float)
    points = points[values > threshold_otsu(values)]
    points = points[points_inside(truth(points), highres_moving)]
    error = np.linalg.norm(apply_affine(matrix, points) - truth(points), axis=1)
    assert accuracy["mean_um"] == pytest.approx(error.mean(), rel=1e-6)


def test_aligned_lowres_matches_the_fixed_image(finished_run, small_pair):
    work, _, result = finished_run
    aligned = open_image(work / "results" / "global" / "moving_lowres_aligned.ome.zarr", "0")
    fixed = open_image(small_pair / "fixed.n5", "lowres")
    moving = open_image(small_pair / "moving.n5", "lowres")
    assert aligned.shape == fixed.shape and aligned.dtype == moving.dtype
    assert aligned.spacing == pytest.approx(fixed.spacing)
    full = tuple(slice(0, n) for n in fixed.shape)
    a, f = aligned.read(full).astype(float), fixed.read(full).astype(float)
    inside = a > 0
    r_after = np.corrcoef(a[inside], f[inside])[0, 1]
    m = moving.read(
        tuple(slice(0, min(p, q)) for p, q in zip(moving.shape, fixed.shape, strict=True))
    )
    crop = tuple(slice(0, n) for n in m.shape)
    r_before = np.corrcoef(m.astype(float).ravel(), f[crop].ravel())[0, 1]
    assert r_after > 0.9 > r_before
    assert "TRE mean" in result.stdout and str(work / "results") in result.stdout


def test_rerun_does_nothing(finished_run):
    work, config, _ = finished_run
    result = run_snakemake(work, config)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_failed_affine_with_on_failure_identity_goes_on(tiny_pair, tmp_path):
    config = pair_config(tiny_pair, tmp_path / "results")
    config["global_affine"] = {"on_failure": "identity"}
    result = run_snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "global" / "report.json").read_text())
    assert report["status"] == "failed, identity used"
    assert "key points" in report["error"] or "matches" in report["error"]
    assert np.allclose(read_affine(tmp_path / "results" / "global" / "affine.txt"), np.eye(4))


def test_failed_affine_stops_the_run_with_the_reason(tiny_pair, tmp_path):
    config = pair_config(tiny_pair, tmp_path / "results")
    result = run_snakemake(tmp_path, config)
    assert result.returncode != 0
    assert "GlobalAffineError" in result.stdout + result.stderr
    assert not (tmp_path / "results" / "global" / "affine.txt").exists()
