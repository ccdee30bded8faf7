"""The workflow through real Snakemake runs (CLI, profiles/local), on a synthetic pair."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bigstream_core.accuracy import grid_points, points_inside
from bigstream_core.io import open_image
from bigstream_core.phantom import GroundTruth
from bigstream_core.tiling import tile_grid
from tests.conftest import pair_config, run_snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tiny_pair, tmp_path_factory):
    """One complete run of the workflow on the tiny pair."""
    work = tmp_path_factory.mktemp("run")
    config = pair_config(tiny_pair, work / "results")
    config["global_affine"] = {"blocksize": [8, 16, 16]}
    result = run_snakemake(work, config)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, config, result


def test_dry_run_lists_every_job_without_writing(tiny_pair, tmp_path):
    config = pair_config(tiny_pair, tmp_path / "results")
    result = run_snakemake(tmp_path, config, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    for rule in ("plan", "evaluate_accuracy", "all"):
        assert rule in result.stdout
    assert not (tmp_path / "results").exists()


def test_plan_records_images_in_zyx_and_the_grids(finished_run, tiny_pair):
    work, config, _ = finished_run
    plan = json.loads((work / "results" / "plan" / "images.json").read_text())
    for role in ("fixed", "moving"):
        for level in ("lowres", "highres"):
            image = open_image(tiny_pair / f"{role}.n5", level)
            recorded = plan["images"][role][level]
            assert recorded["shape"] == list(image.shape)
            assert recorded["spacing_um"] == pytest.approx(image.spacing)
    # the N5 attributes are x, y, z; the plan is z, y, x
    attrs = json.loads((tiny_pair / "fixed.n5" / "highres" / "attributes.json").read_text())
    assert plan["images"]["fixed"]["highres"]["shape"] == attrs["dimensions"][::-1]
    grid = pd.read_csv(work / "results" / "plan" / "grid_keypoints_fixed.tsv", sep="\t")
    lowres = open_image(tiny_pair / "fixed.n5", "lowres")
    expected = tile_grid(lowres.shape, (8, 16, 16), (40, 40, 40))
    assert list(grid["tile"]) == [tile.id for tile in expected]
    assert plan["grids"]["keypoints_fixed"] == len(expected)
    assert plan["provenance"]["config"]["global_affine"]["blocksize"] == [8, 16, 16]
    assert plan["provenance"]["versions"]["bigstream-workflow"]


def test_accuracy_report_matches_an_independent_computation(finished_run, tiny_pair):
    work, _, result = finished_run
    report = json.loads((work / "results" / "qc" / "accuracy.json").read_text())
    assert report["transform"].startswith("identity")
    # identity's error is |T(x) - x| over fixed points whose image lies in the moving image
    truth = GroundTruth.from_json(tiny_pair / "truth.json")
    fixed = open_image(tiny_pair / "fixed.n5", "highres")
    moving = open_image(tiny_pair / "moving.n5", "highres")
    points = grid_points(fixed)
    points = points[points_inside(truth(points), moving)]
    distances = np.linalg.norm(truth(points) - points, axis=1)
    assert report["n_points"] == len(points)
    assert report["mean_um"] == pytest.approx(distances.mean(), rel=1e-6)
    assert report["mean_um"] > 1.0  # the pair is misaligned before registration
    assert "accuracy" in result.stdout + result.stderr
    assert str(work / "results") in result.stdout + result.stderr


def test_rerun_does_nothing(finished_run):
    work, config, _ = finished_run
    result = run_snakemake(work, config)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr
