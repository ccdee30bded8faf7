"""QC views: mid-planes sampled on one physical grid, plane NCC, per-tile grids."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from bigstream_core.io import array_image
from bigstream_workflow.qc_planes import DisplayGrid, sample_plane
from bigstream_workflow.qc_views import mid_plane_ncc, tile_values
from bigstream_workflow.summary import stage_ncc_lines


def volume(shape=(40, 150, 170), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def nearest(image_data, spacing, origin, point_um):
    """The voxel nearest ``point_um`` (z, y, x µm), or NaN outside: one point at a time."""
    index = [round((p - o) / s) for p, o, s in zip(point_um, origin, spacing, strict=True)]
    inside = all(0 <= i < n for i, n in zip(index, image_data.shape, strict=True))
    return image_data[tuple(index)] if inside else np.nan


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_plane_is_the_nearest_voxels_at_the_display_positions(axis):
    fixed = array_image(volume(), spacing=(2.0, 0.5, 0.5))
    data = volume((30, 120, 200), seed=1)
    spacing, origin = (1.5, 0.8, 0.6), (5.0, -10.0, 20.0)  # another grid, partly outside
    moving = array_image(data, spacing=spacing, origin=origin)
    grid = DisplayGrid.around(fixed, max_pixels=60)
    plane = sample_plane(moving, grid, axis)
    rows, cols = grid.plane_axes(axis)
    for r in range(0, plane.shape[0], 7):
        for c in range(0, plane.shape[1], 5):
            point = list(grid.centre_um)
            point[rows], point[cols] = grid.coords_um[rows][r], grid.coords_um[cols][c]
            np.testing.assert_equal(plane[r, c], nearest(data, spacing, origin, point))
    assert np.isnan(plane).any() and np.isfinite(plane).any()


def test_a_plane_is_read_one_chunk_band_at_a_time():
    image = array_image(volume((64, 300, 260)), spacing=(1.0, 1.0, 1.0))
    regions = []

    class Recording(type(image)):
        def read(self, region):
            regions.append(region)
            return super().read(region)

    recording = Recording(**{f.name: getattr(image, f.name) for f in dataclasses.fields(image)})
    grid = DisplayGrid.around(recording, max_pixels=100)
    plane = sample_plane(recording, grid, 0)
    assert np.isfinite(plane).all()
    band = recording.chunks[1]
    assert len(regions) == -(-300 // band)
    for z, y, _ in regions:
        assert z.stop - z.start == 1 and y.stop - y.start <= band


def test_the_display_grid_caps_the_pixels_and_keeps_the_spacing_when_small():
    image = array_image(np.zeros((10, 2000, 50), np.uint8), spacing=(3.0, 0.25, 1.0))
    grid = DisplayGrid.around(image, max_pixels=500)
    assert [len(c) for c in grid.coords_um] == [10, 500, 50]
    assert grid.centre_um == (13.5, 249.875, 24.5)


def test_plane_ncc_is_one_for_the_same_image_and_near_zero_for_noise():
    planes = [volume((1, 80, 90), seed=s)[0] for s in range(3)]
    assert mid_plane_ncc(planes, planes) == pytest.approx(1.0)
    others = [volume((1, 80, 90), seed=s + 10)[0] for s in range(3)]
    assert abs(mid_plane_ncc(planes, others)) < 0.05
    blank = [np.full_like(p, np.nan) for p in planes]
    assert np.isnan(mid_plane_ncc(planes, blank))


def test_a_report_column_becomes_a_grid_of_tiles():
    report = pd.DataFrame({"tile": ["z0_y0_x0", "z1_y0_x2", "z0_y1_x1"], "inliers": [5, 7, "x"]})
    grid = tile_values(report, "inliers")
    assert grid.shape == (2, 2, 3)
    assert grid[0, 0, 0] == 5 and grid[1, 0, 2] == 7
    assert np.isnan(grid[0, 1, 1]) and np.isnan(grid[1, 1, 1])


def test_the_run_summary_warns_when_a_stage_lowered_the_ncc(tmp_path):
    path = tmp_path / "metrics.tsv"
    stages = ["before", "global affine", "local affines", "aligned (all stages)"]
    pd.DataFrame({"stage": stages, "ncc_fg_mid_planes": [0.30, 0.575, 0.550, 0.62]}).to_csv(
        path, sep="\t", index=False
    )
    lines = stage_ncc_lines(str(path))
    assert "global affine 0.5750, local affines 0.5500" in lines[1]
    warnings = [line for line in lines if "WARNING" in line]
    assert len(warnings) == 1 and "local affines lowered" in warnings[0]
    assert "0.5750 -> 0.5500" in warnings[0]
    pd.DataFrame({"stage": stages, "ncc_fg_mid_planes": [0.30, 0.55, 0.575, 0.62]}).to_csv(
        path, sep="\t", index=False
    )
    assert not [line for line in stage_ncc_lines(str(path)) if "WARNING" in line]
    assert stage_ncc_lines(str(tmp_path / "none.tsv")) == []
