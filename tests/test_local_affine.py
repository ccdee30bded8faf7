"""Local affines: tile fits, filling, outliers, the seamless blend, the API's three modes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bigstream_core import api
from bigstream_core import keypoints as keypoint_module
from bigstream_core.accuracy import evaluate, foreground_ncc
from bigstream_core.affine_field import LocalAffineField, field_from_grid
from bigstream_core.api import (
    affine_refine,
    apply_local_affines,
    ransac_affine,
    tiled_deformable_align,
    tiled_ransac_affine,
    transform_points,
)
from bigstream_core.global_affine import image_keypoints, strongest
from bigstream_core.io import array_image, open_image
from bigstream_core.keypoints import keypoint_grid, tile_keypoints
from bigstream_core.local_affine import (
    core_mask,
    fill_missing,
    find_outliers,
    fit_tile,
    keypoint_regions,
    prove_tile,
)
from bigstream_core.phantom import GroundTruth, another_round, dense, preset, write_pair
from bigstream_core.tiling import overlap_voxels, tile_grid, tiles_meeting
from bigstream_core.transforms import affine_map, chain
from bigstream_workflow.config import load_yaml
from tests.conftest import ROOT

KEYPOINTS = dict(min_radius=1.5, max_radius=5, match_threshold=0.7)
LOCAL = dict(**KEYPOINTS, blocksize=(20, 40, 40), overlap=0.25, cc_radius=6, min_matches=12)


def shift(z=0.0, y=0.0, x=0.0, scale=1.0):
    matrix = np.diag([scale, scale, scale, 1.0])
    matrix[:3, 3] = (z, y, x)
    return matrix


def two_by_two_field(affines, overlap=5.0):
    """A field of 1 x 1 x 2 tiles meeting at x = 50 µm, blended over +-overlap µm."""
    grid = np.asarray(affines, dtype=float).reshape(1, 1, 2, 4, 4)
    return LocalAffineField(
        grid, (np.array([]), np.array([]), np.array([50.0])), (1.0, 1.0, overlap)
    )


def test_equal_tiles_give_exactly_their_affine():
    a = np.array([[1.02, 0.01, 0, 3], [0, 0.98, 0.02, -2], [0.01, 0, 1.01, 1], [0, 0, 0, 1]])
    field = LocalAffineField(np.broadcast_to(a, (2, 3, 2, 4, 4)).copy(),
                             (np.array([30.0]), np.array([40.0, 80.0]), np.array([50.0])),
                             (4.0, 4.0, 4.0))  # fmt: skip
    points = np.random.default_rng(0).uniform(0, 100, (500, 3))
    assert np.allclose(field(points), affine_map(a)(points))


def _line_gradient(field, step=0.05):
    x = np.arange(20.0, 80.0, step)
    points = np.stack([np.full_like(x, 5.0), np.full_like(x, 5.0), x], axis=1)
    displacement = field(points) - points
    return x[:-1], np.diff(displacement[:, 2]) / step


def test_blend_has_no_seam_and_a_positive_jacobian():
    field = two_by_two_field([shift(x=0.0), shift(x=1.5, scale=1.01)], overlap=5.0)
    x, gradient = _line_gradient(field)
    jumps = np.abs(np.diff(gradient))
    across = jumps[np.abs(x[:-1] - 50.0) < 0.2].max()
    inside = jumps[(np.abs(x[:-1] - 50.0) > 2) & (np.abs(x[:-1] - 50.0) < 4.9)].max()
    assert across <= 2 * inside + 1e-9  # the gradient changes as smoothly at the edge as inside
    # a hard seam (no overlap) fails the same check: the test can tell
    hard = two_by_two_field([shift(x=0.0), shift(x=1.5, scale=1.01)], overlap=1e-6)
    x, gradient = _line_gradient(hard)
    assert np.abs(np.diff(gradient)).max() > 100 * (across + 1e-3)
    # Jacobian determinant by central differences on a grid spanning the edge
    grid = np.stack(np.meshgrid(*(np.linspace(0, 100, 21),) * 3, indexing="ij"), -1).reshape(-1, 3)
    h = 0.01
    columns = [(field(grid + h * e) - field(grid - h * e)) / (2 * h) for e in np.eye(3)]
    jacobian = np.stack(columns, axis=2)
    assert np.linalg.det(jacobian).min() > 0


def test_failed_tiles_take_their_neighbours_mean_and_none_known_is_identity():
    affines = np.zeros((1, 1, 3, 4, 4))
    affines[0, 0, 0], affines[0, 0, 2] = shift(x=1.0), shift(x=3.0)
    known = np.array([[[True, False, True]]])
    filled = fill_missing(affines, known)
    assert np.allclose(filled[0, 0, 1], shift(x=2.0))
    assert np.allclose(fill_missing(affines, np.zeros_like(known))[0, 0, 1], np.eye(4))
    chain_of_gaps = np.zeros((1, 1, 4, 4, 4))
    chain_of_gaps[0, 0, 0] = shift(y=2.0)
    assert np.allclose(fill_missing(chain_of_gaps, np.array([[[1, 0, 0, 0]]], bool))[0, 0, 3],
                       shift(y=2.0))  # fmt: skip


def test_a_tile_far_from_its_neighbours_is_an_outlier():
    affines = np.broadcast_to(shift(x=1.0), (1, 3, 3, 4, 4)).copy()
    affines[0, 1, 1] = shift(x=9.0)
    centres = np.stack(np.meshgrid([5.0], [5.0, 15.0, 25.0], [5.0, 15.0, 25.0], indexing="ij"), -1)
    outliers = find_outliers(affines, np.ones((1, 3, 3), bool), centres, tolerance=5.0)
    assert outliers.sum() == 1 and outliers[0, 1, 1]


@pytest.fixture(scope="module")
def deformed(deformed_pair):
    fixed = open_image(deformed_pair / "fixed.n5", "lowres")
    moving = open_image(deformed_pair / "moving.n5", "lowres")
    truth = GroundTruth.from_json(deformed_pair / "truth.json")
    affine = ransac_affine(fixed, moving, None, None, **KEYPOINTS, cc_radius=8)
    return fixed, moving, truth, affine


def test_local_affines_halve_the_error_of_the_global_affine(deformed):
    fixed, moving, truth, affine = deformed
    local, report = tiled_ransac_affine(
        fixed, moving, None, None, **LOCAL, global_affine=affine, return_report=True
    )
    assert local.shape == (2, 2, 2, 4, 4)
    assert (report["status"] == "ok").sum() >= 6
    global_only = affine_map(affine)
    field = apply_local_affines_transform(local, fixed, affine)
    before = evaluate(global_only, truth, fixed, moving)["mean_um"]
    after = evaluate(field, truth, fixed, moving)["mean_um"]
    assert after < 0.5 * before, (before, after)
    assert foreground_ncc(fixed, moving, field) > foreground_ncc(fixed, moving, global_only)


def apply_local_affines_transform(local, fixed, affine):
    """G(L(x)) of a tile grid fitted with the LOCAL parameters."""
    overlap = tuple(round(b * LOCAL["overlap"]) for b in LOCAL["blocksize"])
    field = field_from_grid(local, LOCAL["blocksize"], overlap, fixed.spacing, fixed.origin)
    return chain(affine_map(affine), field)


def test_a_tile_fits_on_the_global_key_points_near_it_and_detects_none(deformed, monkeypatch):
    fixed, moving, _, affine = deformed
    params = {key: LOCAL[key] for key in ("cc_radius", "match_threshold", "min_matches")}
    params |= {"nspots": 2000, "align_threshold": 2.0, "search_radius": 8.0}
    tables = {}  # the global stage's per-tile tables, on its own (smaller) tile grid
    for role, image in (("fixed", fixed), ("moving", moving)):
        grid = keypoint_grid(image.shape, (8, 16, 16), 1.5, 5)
        tables[role] = (grid, {t.id: tile_keypoints(image, t, 1.5, 5, 10, 8) for t in grid})

    def detection_forbidden(*args, **kwargs):
        raise AssertionError("the local stage detected key points again")

    monkeypatch.setattr(keypoint_module, "detect_blobs", detection_forbidden)
    everything = tuple(strongest(list(tables[role][1].values())) for role in ("fixed", "moving"))
    local_grid = tile_grid(
        fixed.shape, LOCAL["blocksize"], overlap_voxels(LOCAL["blocksize"], 0.25)
    )
    for tile in local_grid:
        regions = keypoint_regions(tile, fixed, moving, affine, params["search_radius"])
        near = []
        for role in ("fixed", "moving"):
            grid, by_tile = tables[role]
            chosen = tiles_meeting(grid, *regions[role])
            assert 0 < len(chosen) < len(grid)
            near.append(strongest([by_tile[t.id] for t in chosen]))
        with_all = fit_tile(fixed, moving, affine, tile, everything, params)
        with_near = fit_tile(fixed, moving, affine, tile, tuple(near), params)
        assert with_all[1] == with_near[1], tile.id  # the same points, matches and inliers
        assert np.array_equal(with_all[0], with_near[0]) and with_near[1]["status"] == "ok"


# The workflow's per-tile refinement block (config/config.yaml's local_affine.refine: off by
# default), and the same switched on.
REFINE = load_yaml(ROOT / "config" / "config.yaml")["local_affine"]["refine"]
REFINED = {**REFINE, "enabled": True}
SMALL = preset("small")
HALVES = dataclasses.replace(SMALL, split_shift_um=(0.0, 3.0, 2.0))  # |d| 1.8 um, no affine fits
PAIRS = {
    # the truth is an affine: per-tile fits can only add noise (before the tiles had to prove
    # themselves they did: TRE 0.058 -> 0.111 um on the same-round pair, RANSAC global affine)
    "pure affine": SMALL,
    "pure affine, another round": another_round(SMALL),
    "deformed, another round": another_round(dataclasses.replace(SMALL, deform_amplitude_um=4.0)),
    "two rigid halves": HALVES,
    "dense, deformed": dense(dataclasses.replace(SMALL, deform_amplitude_um=4.0), (4.0, 10.0)),
}


@pytest.fixture(scope="module")
def pair_stages(tmp_path_factory):
    """Per pair name: its low-res images, truth and global affine (RANSAC, then refined, as
    the workflow's defaults), written and computed once."""
    cache = {}

    def stages(name):
        if name not in cache:
            folder = tmp_path_factory.mktemp(name.replace(" ", "_").replace(",", ""))
            write_pair(folder, PAIRS[name], ome_zarr=False)
            fixed, moving = (open_image(folder / f"{r}.n5", "lowres") for r in ("fixed", "moving"))
            ransac = ransac_affine(fixed, moving, None, None, **KEYPOINTS, cc_radius=8)
            affine = affine_refine(fixed, moving, None, None, ransac)
            cache[name] = fixed, moving, GroundTruth.from_json(folder / "truth.json"), affine
        return cache[name]

    return stages


def final_tre(fixed, moving, truth, affine, local) -> float:
    """Mean TRE (µm) after a deformable registration (low-res blocks) on top of the affines."""
    field = tiled_deformable_align(
        fixed, moving, None, None, LOCAL["blocksize"], global_affine=affine, local_affines=local,
        local_blocksize=LOCAL["blocksize"], local_overlap=LOCAL["overlap"],
        deform_kwargs={"mask_threshold": 150},
    )  # fmt: skip

    def estimate(points):
        return transform_points(
            points, fixed.spacing, global_affine=affine, local_affines=local, field=field,
            origin=fixed.origin, local_blocksize=LOCAL["blocksize"], local_overlap=LOCAL["overlap"],
        )  # fmt: skip

    return evaluate(estimate, truth, fixed, moving)["mean_um"]


@pytest.mark.parametrize(
    "name, refine",
    [(name, REFINE) for name in PAIRS] + [("pure affine, another round", REFINED)],
    ids=[*PAIRS, "pure affine, another round, tiles refined"],
)
def test_the_local_stage_never_makes_a_pair_worse(pair_stages, name, refine):
    # measured (TRE um, global -> local; final: without -> with local affines): pure affine
    # 0.012 -> 0.012, 0.125 -> 0.125; another round 0.013 -> 0.013 (refined tiles 0.014),
    # 0.309 -> 0.309; deformed, another round 0.626 -> 0.234, 0.333 -> 0.312; halves
    # 0.684 -> 0.523, 0.253 -> 0.239; dense 1.189 -> 0.681, 0.535 -> 0.497
    fixed, moving, truth, affine = pair_stages(name)
    local, report = tiled_ransac_affine(
        fixed, moving, None, None, **LOCAL, global_affine=affine, return_report=True,
        refine=refine,
    )  # fmt: skip
    global_only, field = affine_map(affine), apply_local_affines_transform(local, fixed, affine)
    before = evaluate(global_only, truth, fixed, moving)["mean_um"]
    after = evaluate(field, truth, fixed, moving)["mean_um"]
    voxel = min(fixed.spacing)
    assert after <= 1.05 * before + 0.002 * voxel, (before, after, report)  # noise: 1/500 voxel
    assert foreground_ncc(fixed, moving, field) >= foreground_ncc(fixed, moving, global_only)
    without, with_local = (final_tre(fixed, moving, truth, affine, g) for g in (None, local))
    assert with_local <= 1.05 * without + 0.002 * voxel, (without, with_local)


@pytest.mark.parametrize(
    "refine, gain", [(REFINE, 0.85), (REFINED, 0.6)], ids=["RANSAC tiles", "refined tiles"]
)
def test_on_two_rigid_halves_the_local_stage_still_brings_a_clear_gain(pair_stages, refine, gain):
    # no single affine fits two halves slid 3.6 um against each other; each tile's does
    # (measured: TRE 0.684 um -> 0.523 with RANSAC tiles, 0.339 refined; 7 and 8 of 8 tiles
    # keep their own affine)
    fixed, moving, truth, affine = pair_stages("two rigid halves")
    local, report = tiled_ransac_affine(
        fixed, moving, None, None, **LOCAL, global_affine=affine, refine=refine,
        return_report=True,
    )  # fmt: skip
    before = evaluate(affine_map(affine), truth, fixed, moving)["mean_um"]
    after = evaluate(apply_local_affines_transform(local, fixed, affine), truth, fixed, moving)
    assert after["mean_um"] < gain * before, (before, after)
    decisions = report["decision"]
    assert (decisions != "").all() and decisions.str.startswith("local").sum() >= 6


def test_a_tile_filled_from_its_neighbours_proves_itself_too(pair_stages, monkeypatch):
    # the fits of the halves' x1 side fail, so those tiles are filled from the x0 side's,
    # whose shift is the other half's: the fills must lose their proof (without it the
    # local stage made the pair worse: TRE 0.684 -> 1.095 um; with it 0.602)
    fixed, moving, truth, affine = pair_stages("two rigid halves")
    fit = api.fit_tile

    def fail_on_x1(fixed, moving, global_affine, tile, *args):
        matrix, row = fit(fixed, moving, global_affine, tile, *args)
        return (None, row | {"status": "failed: forced"}) if tile.index[2] == 1 else (matrix, row)

    monkeypatch.setattr(api, "fit_tile", fail_on_x1)
    local, report = tiled_ransac_affine(
        fixed, moving, None, None, **LOCAL, global_affine=affine, return_report=True
    )
    filled = report[report["filled"] != ""]
    assert len(filled) == 4 and filled["decision"].str.startswith("global").all(), filled
    assert np.isfinite(filled["metric_local"]).all()  # the fills were measured, not skipped
    before = evaluate(affine_map(affine), truth, fixed, moving)["mean_um"]
    after = evaluate(apply_local_affines_transform(local, fixed, affine), truth, fixed, moving)
    assert after["mean_um"] <= 1.05 * before, (before, after)


def test_a_tile_keeps_the_global_affine_unless_its_own_proves_better(deformed):
    fixed, moving, _, affine = deformed
    tile = tile_grid(fixed.shape, LOCAL["blocksize"], overlap_voxels(LOCAL["blocksize"], 0.25))[6]
    region = tile.slices("halo")
    origin = np.asarray(fixed.origin) + [s.start for s in region] * np.asarray(fixed.spacing)
    fixed_tile = array_image(fixed.read(region), fixed.spacing, tuple(origin))
    core = core_mask(tile)
    keypoints = tuple(image_keypoints(image, 1.5, 5, 10, 8) for image in (fixed, moving))
    params = {key: LOCAL[key] for key in ("cc_radius", "match_threshold", "min_matches")}
    params |= {"nspots": 2000, "align_threshold": 2.0, "search_radius": 8.0}
    fitted, row = fit_tile(fixed, moving, affine, tile, keypoints, params)
    assert row["decision"] == "local" and row["metric_local"] > row["metric_global"], row
    wrong = shift(x=2.0)  # a tile affine 2 um (1.1 voxel) off
    kept, proof = prove_tile(fixed_tile, moving, affine, wrong, {}, (core, None))
    assert np.array_equal(kept, np.eye(4)) and proof["decision"].startswith("global"), proof
    assert proof["metric_local"] < proof["metric_global"]
    right, proof = prove_tile(fixed_tile, moving, affine, fitted, {}, (core, None))
    assert np.array_equal(right, fitted) and proof["decision"] == "local"


def test_empty_and_corrupted_tiles_are_filled_and_reported(deformed):
    fixed, moving, truth, affine = deformed
    data = fixed.read((slice(None),) * 3).copy()
    data[:20, :40, :40] = 100  # tile z0_y0_x0: no content
    corrupted = data[20:, 40:, 40:]  # tile z1_y1_x1: its voxels shuffled
    rng = np.random.default_rng(1)
    data[20:, 40:, 40:] = rng.permutation(corrupted.ravel()).reshape(corrupted.shape)
    damaged = array_image(data, fixed.spacing, fixed.origin)
    local, report = tiled_ransac_affine(
        damaged, moving, None, None, **LOCAL, global_affine=affine, return_report=True
    )
    rows = report.set_index("tile")
    for tile in ("z0_y0_x0", "z1_y1_x1"):
        assert rows.loc[tile, "filled"] != "", rows.loc[tile]
    assert np.isfinite(local).all()


def test_the_three_output_modes_agree(deformed, tmp_path):
    fixed, moving, _, affine = deformed
    local = np.broadcast_to(shift(x=0.3), (2, 2, 2, 4, 4)).copy()
    args = (fixed, moving, None, None, local, LOCAL["blocksize"])
    in_memory = apply_local_affines(*args, global_affine=affine, overlap=LOCAL["overlap"])
    lazy = apply_local_affines(*args, global_affine=affine, overlap=LOCAL["overlap"], lazy=True)
    written = apply_local_affines(*args, global_affine=affine, overlap=LOCAL["overlap"],
                                  write_path=tmp_path / "aligned.ome.zarr")  # fmt: skip
    assert isinstance(in_memory, np.ndarray) and in_memory.dtype == moving.dtype
    assert hasattr(lazy, "dask") and np.array_equal(lazy.compute(), in_memory)
    assert np.array_equal(written.read((slice(None),) * 3), in_memory)
    assert written.spacing == pytest.approx(fixed.spacing)


def test_a_block_only_touches_the_tiles_that_reach_it():
    edges = np.arange(1, 100) * 10.0  # 100 tiles along x
    field = LocalAffineField(
        np.broadcast_to(np.eye(4), (1, 1, 100, 4, 4)).copy(), (np.array([]),) * 2 + (edges,),
        (1.0, 1.0, 2.0),
    )  # fmt: skip
    first, weights = field.axis_weights(2, np.linspace(503.0, 509.0, 50))
    assert first == 50 and weights.shape == (50, 2)  # tiles 50 and 51 (from 508 µm), not all 100
    assert np.allclose(weights.sum(axis=1), 1.0)
    points = np.stack([np.zeros(50), np.zeros(50), np.linspace(503.0, 509.0, 50)], axis=1)
    assert np.allclose(field(points), points)
