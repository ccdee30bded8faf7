"""Deformable registration: accuracy against a known deformation, no folding, no seams,
the stitched field and its inverse, the API's output modes, carrying points."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from bigstream_core import deform as deform_module
from bigstream_core.accuracy import foreground_ncc, foreground_points, points_inside
from bigstream_core.api import (
    apply_position_field,
    invert_displacement_field,
    ransac_affine,
    tiled_deformable_align,
    transform_points,
)
from bigstream_core.deform import DeformParams, level_cascade, level_sigma, register_tile
from bigstream_core.displacement import (
    INVERSE_CONVENTION,
    JACOBIAN_SLAB_PLANES,
    DisplacementField,
    create_store,
    invert_region,
    jacobian_determinant,
    jacobian_summary,
    node_grid,
    open_field,
    round_trip_error,
    stitch_region,
    write_region,
)
from bigstream_core.interpolation import resize_field, upsample_box
from bigstream_core.io import open_image
from bigstream_core.phantom import GroundTruth, preset, write_pair
from bigstream_core.points import read_points, warp_points, write_points
from bigstream_core.resample import transformed_voxels, voxel_centres
from bigstream_core.tiling import block_chunks, neighbours, node_tile, overlap_voxels, tile_grid
from bigstream_core.transforms import affine_map, chain

BLOCKSIZE = (40, 80, 80)
OVERLAP = overlap_voxels(BLOCKSIZE, 0.125)
PARAMS = DeformParams(mask_threshold=150)  # the phantom's background is 100 +- 10 counts
WHOLE = (slice(None),) * 3


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """'small' with a smooth deformation of up to 4.4 µm (5 voxels along z) on an affine."""
    out = tmp_path_factory.mktemp("deform_pair")
    spec = dataclasses.replace(preset("small"), deform_amplitude_um=4.4, deform_scale_um=18.0)
    write_pair(out, spec)
    images = {
        (role, level): open_image(out / f"{role}.n5", level)
        for role in ("fixed", "moving")
        for level in ("lowres", "highres")
    }
    truth = GroundTruth.from_json(out / "truth.json")
    affine = ransac_affine(
        images["fixed", "lowres"], images["moving", "lowres"], None, None,
        min_radius=1.5, max_radius=5, match_threshold=0.7, cc_radius=8,
    )  # fmt: skip
    return images, truth, affine


@pytest.fixture(scope="module")
def blocks(pair, tmp_path_factory):
    """Every block's field, saved as the workflow's deform jobs save them."""
    images, _, affine = pair
    fixed = images["fixed", "highres"]
    folder = tmp_path_factory.mktemp("blocks")
    tiles = tile_grid(fixed.shape, BLOCKSIZE, OVERLAP, PARAMS.shrink_factors[-1])
    rows = []
    for tile in tiles:
        field, row = register_tile(
            fixed, images["moving", "highres"], affine_map(affine), tile, PARAMS
        )
        np.save(folder / f"{tile.id}.npy", field)
        rows.append(row)
    return tiles, folder, pd.DataFrame(rows)


def stitched(blocks, fixed, overlap, step=1):
    """The whole field stitched from the blocks with ``overlap`` voxels of blending, on
    every ``step``-th voxel (the nodes of a stored field)."""
    tiles, folder, _ = blocks
    by_id = {tile.id: tile for tile in tiles}
    field = np.zeros((*node_grid(fixed.shape, fixed.spacing, step)[0], 3), dtype=np.float32)
    for tile in tiles:
        field[node_tile(tile, step).slices("core")] = stitch_region(
            tile, neighbours(tile, by_id), fixed.shape, BLOCKSIZE, overlap,
            lambda block: np.load(folder / f"{block.id}.npy", mmap_mode="r"),
            PARAMS.shrink_factors[-1], step,
        )  # fmt: skip
    return field


def stored(blocks, fixed, path, step):
    """The field stored as the workflow stores it (rules create_field_store, stitch_field,
    finish_field) with a node every ``step`` voxels, opened as its readers open it."""
    shape, spacing = node_grid(fixed.shape, fixed.spacing, step)
    chunks = block_chunks([size // step for size in BLOCKSIZE])
    array = create_store(path, shape, spacing, fixed.origin, chunks, shrink=step)
    field = stitched(blocks, fixed, OVERLAP, step)
    for tile in blocks[0]:
        write_region(array, node_tile(tile, step), field[node_tile(tile, step).slices("core")])
    array.attrs["complete"] = True
    return open_field(path)


def foreground(pair):
    images, truth, _ = pair
    fixed, moving = images["fixed", "highres"], images["moving", "highres"]
    points = foreground_points(fixed, 40)
    return points[points_inside(truth(points), moving)]


def rms_voxels(transform, truth, points, spacing) -> float:
    errors = (transform(points) - truth(points)) / np.asarray(spacing)
    return float(np.sqrt((errors**2).sum(axis=1).mean()))


def test_the_deformation_is_recovered_to_under_half_a_voxel_without_folding(pair, blocks):
    images, truth, affine = pair
    fixed = images["fixed", "highres"]
    field = stitched(blocks, fixed, OVERLAP)
    points = foreground(pair)
    affine_only = affine_map(affine)
    full = chain(affine_only, DisplacementField(field, fixed.spacing, fixed.origin))
    before = rms_voxels(affine_only, truth, points, fixed.spacing)
    after = rms_voxels(full, truth, points, fixed.spacing)
    assert before > 1.0, before  # what the affine cannot explain is there to be found
    print(f"RMS error over the fixed foreground: affine {before:.3f} -> deform {after:.3f} voxel")
    assert after < 0.5, (before, after)
    assert jacobian_determinant(field, fixed.spacing).min() > 0
    low = (images["fixed", "lowres"], images["moving", "lowres"])
    assert foreground_ncc(*low, full) > foreground_ncc(*low, affine_only) + 0.01
    report = blocks[2]
    assert (report["ncc_after"] >= report["ncc_before"]).all()


def test_the_symmetric_gradient_and_a_radius_per_level_recover_the_deformation_too(pair):
    """The other modes of the deform stage (``gradient: symmetric``, ``cc_radius`` per level)
    on the same blocks: under half a voxel without folding, and not the default's field."""
    images, truth, affine = pair
    fixed, moving = images["fixed", "highres"], images["moving", "highres"]
    points = foreground(pair)
    errors = {}
    for params in (PARAMS, dataclasses.replace(PARAMS, gradient="symmetric", cc_radius=(3, 2))):
        field = tiled_deformable_align(
            fixed, moving, None, None, BLOCKSIZE, global_affine=affine,
            deform_kwargs=dataclasses.asdict(params),
        )  # fmt: skip
        full = chain(affine_map(affine), DisplacementField(field, fixed.spacing, fixed.origin))
        errors[params.gradient] = rms_voxels(full, truth, points, fixed.spacing)
        assert jacobian_determinant(field, fixed.spacing).min() > 0
    print(f"RMS error over the fixed foreground (voxels): {errors}")
    assert errors["symmetric"] < 0.5 and errors["symmetric"] != errors["moving"]
    with pytest.raises(ValueError, match="one per level"):
        DeformParams(cc_radius=(3, 2, 1))
    with pytest.raises(ValueError, match="expected one of"):
        DeformParams(gradient="both")


def test_the_transform_computed_every_second_voxel_is_exact_on_the_field_nodes(pair, blocks):
    """``transform_step: 2`` evaluates the transform on even voxels, the field's nodes, even
    for a region that starts on odd ones: the affine and the field are linear in between."""
    images, _, affine = pair
    fixed, moving = images["fixed", "highres"], images["moving", "highres"]
    full = chain(affine_map(affine), DisplacementField(stitched(blocks, fixed, OVERLAP),
                                                       fixed.spacing, fixed.origin))  # fmt: skip
    region = (slice(3, 61), slice(17, 150), slice(40, 101))  # across block edges, odd sizes
    exact = transformed_voxels(moving, full, region, fixed.spacing, fixed.origin, step=1)
    stepped = transformed_voxels(moving, full, region, fixed.spacing, fixed.origin, step=2)
    errors = np.sqrt(((stepped - exact) ** 2).sum(axis=0))
    error = errors.max()
    print(f"transform every 2nd voxel: error {errors.mean():.1e} mean, {error:.1e} largest voxel")
    assert error < 1e-3, (error, errors.mean())
    coarse = transformed_voxels(moving, full, region, fixed.spacing, fixed.origin, step=8)
    assert np.abs(coarse - exact).max() > 0.01  # the check tells a coarser step apart


def test_a_part_of_a_coarse_field_upsampled_equals_that_part_of_the_whole():
    rng = np.random.default_rng(3)
    coarse = rng.normal(size=(9, 10, 11, 3)).astype(np.float32)
    whole = resize_field(coarse, (18, 20, 21), 2.0)  # the last voxel beyond the last node
    for box in (
        [(3, 14), (0, 20), (5, 6)],
        [(17, 18), (1, 2), (19, 21)],
        [(0, 18), (0, 20), (0, 21)],
    ):
        part = upsample_box(coarse, box, 2)
        assert np.array_equal(part, whole[tuple(slice(a, b) for a, b in box)]), box


def test_the_jacobian_summary_slab_by_slab_matches_the_whole_field():
    rng = np.random.default_rng(4)
    field = rng.normal(scale=0.2, size=(JACOBIAN_SLAB_PLANES * 2 + 7, 9, 8, 3)).astype(np.float32)
    field[JACOBIAN_SLAB_PLANES, 4, 4, 0] = 40.0  # folds its neighbours along z, at a slab edge
    whole = jacobian_determinant(field, (1.0, 0.5, 2.0))
    smallest, folded = jacobian_summary(field, (1.0, 0.5, 2.0))
    assert folded == int((whole <= 0).sum()) > 0
    assert smallest == pytest.approx(float(whole.min()))


def _boundary_jumps(field, axis, boundary):
    """|d(x + 1) - d(x)| across ``boundary`` along ``axis`` and on the planes away from it."""
    steps = np.abs(np.diff(field, axis=axis)).max(axis=-1)
    steps = np.moveaxis(steps, axis, 0)
    across = np.percentile(steps[boundary - 1], 99)
    away = [np.percentile(steps[i], 99) for i in range(len(steps)) if abs(i - boundary + 1) > 6]
    return across, float(np.median(away))


def test_the_stitched_field_has_no_seams(pair, blocks):
    fixed = pair[0]["fixed", "highres"]
    blended = stitched(blocks, fixed, OVERLAP)
    hard = stitched(blocks, fixed, (0, 0, 0))  # each core from its own block alone
    seams = 0
    for axis in range(3):
        across, away = _boundary_jumps(blended, axis, BLOCKSIZE[axis])
        assert across < 2 * away, (axis, across, away)
        hard_across, _ = _boundary_jumps(hard, axis, BLOCKSIZE[axis])
        seams += hard_across > 2 * away
    assert seams >= 2  # the same check finds the seams of an unblended field: it can tell


def test_the_field_on_every_second_voxel_gives_the_transform_of_every_voxel(pair, blocks, tmp_path):
    """The workflow's field, on every 2nd voxel (the deformation's finest level), against the
    same blocks stitched at every voxel (``field_shrink: 1``), and against each block's own
    field (the ground truth where one block's weight is 1): the same transform everywhere."""
    fixed = pair[0]["fixed", "highres"]
    coarse = stored(blocks, fixed, tmp_path / "coarse.zarr", 2)
    full = stored(blocks, fixed, tmp_path / "full.zarr", 1)
    assert coarse.array.shape == (40, 80, 80, 3)  # ceil(80 x 160 x 160 / 2)
    np.testing.assert_allclose(coarse.spacing, 2 * np.asarray(fixed.spacing))
    assert full.array.shape == (*fixed.shape, 3)
    np.testing.assert_allclose(full.spacing, fixed.spacing)
    for field, step in ((coarse, 2), (full, 1)):
        assert field.shrink == field.array.attrs["shrink"] == step
        np.testing.assert_allclose(field.origin, fixed.origin)
    # every voxel of a box across block edges (z 40, y 80) to the image's far end (z, x)
    box = (slice(20, 80), slice(55, 105), slice(120, 160))
    points = voxel_centres(box, fixed.spacing, fixed.origin)
    error = np.linalg.norm((coarse(points) - full(points)) / fixed.spacing, axis=1)
    print(f"field on every 2nd voxel vs every voxel: {error.max():.2e} largest, "
          f"{error.mean():.2e} mean voxel")  # fmt: skip
    assert error.max() < 0.01
    tiles, folder, _ = blocks
    for tile in tiles:  # where one block's weight is 1: that block's field, at every voxel
        # between the nodes (even voxels) where it is 1: the core less the blend bands
        inner = [(-(-(a + o) // 2) * 2 if a else 0, (b - o - 1) // 2 * 2 + 1 if b < n else n)
                 for (a, b), o, n in zip(tile.core, OVERLAP, fixed.shape, strict=True)]  # fmt: skip
        own = resize_field(
            np.load(folder / f"{tile.id}.npy"),
            [b - a for a, b in inner],
            2.0,
            [a - h for (a, _), (h, _) in zip(inner, tile.halo, strict=True)],
        )
        points = voxel_centres(tuple(slice(*bounds) for bounds in inner), fixed.spacing,
                               fixed.origin)  # fmt: skip
        assert np.abs(coarse.displacement(points) - own.reshape(-1, 3)).max() < 1e-5  # µm


def test_the_inverse_field_undoes_the_forward_one(pair, blocks, tmp_path):
    """On the nodes of the stored field (every 2nd voxel), as the workflow inverts it."""
    fixed = pair[0]["fixed", "highres"]
    forward = stored(blocks, fixed, tmp_path / "field.zarr", 2)
    shape, spacing = node_grid(fixed.shape, fixed.spacing, 2)
    chunks = block_chunks([size // 2 for size in BLOCKSIZE])
    inverse = create_store(tmp_path / "inverse.zarr", shape, spacing, fixed.origin, chunks,
                           INVERSE_CONVENTION, shrink=2)  # fmt: skip
    for tile in blocks[0]:
        nodes = node_tile(tile, 2)
        region, report = invert_region(forward, nodes)
        assert report["residual_um"] < 1e-2
        # round trip: 0.002-0.008 um on average, under a fifth of a voxel (0.84-0.92 um) at
        # worst (at every voxel: ~0.001, an eighth; the true inverse bends between the nodes)
        assert report["round_trip_mean_um"] < 0.01 and report["round_trip_max_um"] < 0.2
        # the same check of a wrong inverse (none) finds the whole displacement
        core = forward.array[(*nodes.slices("core"), slice(None))]
        start = forward.origin + np.array([a for a, _ in nodes.core]) * forward.spacing
        wrong = round_trip_error(core, DisplacementField(np.zeros_like(core), forward.spacing,
                                                         start))  # fmt: skip
        assert wrong["round_trip_mean_um"] == pytest.approx(
            np.linalg.norm(core, axis=-1).mean(), rel=0.2
        )
        write_region(inverse, nodes, region)
    inverse.attrs["complete"] = True
    points = foreground(pair)  # at any position, not only nodes
    back = open_field(tmp_path / "inverse.zarr")(forward(points))
    print(f"points there and back: {np.abs(back - points).max():.4f} um at most")
    assert np.abs(back - points).max() < 0.05  # µm (0.04; at every voxel 0.02)
    with pytest.raises(ValueError, match="not complete"):
        create_store(tmp_path / "half.zarr", fixed.shape, fixed.spacing, fixed.origin, BLOCKSIZE)
        open_field(tmp_path / "half.zarr")


def test_api_field_and_its_output_modes(pair, blocks, tmp_path):
    images, _, affine = pair
    fixed, moving = images["fixed", "highres"], images["moving", "highres"]
    field, report = tiled_deformable_align(
        fixed, moving, None, None, BLOCKSIZE, global_affine=affine,
        deform_kwargs={"mask_threshold": 150}, return_report=True,
    )  # fmt: skip
    assert np.array_equal(field, stitched(blocks, fixed, OVERLAP))  # same blocks, same blend
    assert len(report) == len(blocks[0])
    written = tiled_deformable_align(
        fixed, moving, None, None, BLOCKSIZE, global_affine=affine,
        deform_kwargs={"mask_threshold": 150}, write_path=tmp_path / "field.zarr",
    )  # fmt: skip
    assert np.array_equal(written[...], field)
    args = (fixed, moving, None, None)
    in_memory = apply_position_field(*args, field, (64, 64, 64), global_affine=affine)
    lazy = apply_position_field(*args, field, (64, 64, 64), global_affine=affine, lazy=True)
    from_path = apply_position_field(*args, tmp_path / "field.zarr", (64, 64, 64),
                                     global_affine=affine,
                                     write_path=tmp_path / "aligned.ome.zarr")  # fmt: skip
    assert in_memory.dtype == moving.dtype and in_memory.shape == fixed.shape
    assert np.array_equal(lazy.compute(), in_memory)
    assert np.array_equal(from_path.read(WHOLE), in_memory)


def test_points_tables_keep_their_columns_and_format(tmp_path):
    table = pd.DataFrame({"z": [1.0, 2.0], "y": [3.0, 4.0], "x": [5.0, 6.0], "id": [7, 8]})
    for name in ("spots.csv", "spots.tsv", "spots.parquet"):
        write_points(tmp_path / name, table)
        moved = warp_points(read_points(tmp_path / name), lambda p: p + 1.0)
        assert list(moved.columns) == ["z", "y", "x", "id"]
        assert np.allclose(moved[["z", "y", "x"]], table[["z", "y", "x"]] + 1.0)
        assert list(moved["id"]) == [7, 8]
    (tmp_path / "bad.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match=r"bad.csv.*no column\(s\) \['z', 'y', 'x'\]"):
        read_points(tmp_path / "bad.csv")


def test_api_inverse_and_points_round_trip(pair, blocks):
    images, truth, affine = pair
    fixed = images["fixed", "highres"]
    field = stitched(blocks, fixed, OVERLAP)
    inverse = invert_displacement_field(
        field, fixed.spacing, blocksize=BLOCKSIZE, origin=fixed.origin
    )
    points = foreground(pair)
    kwargs = dict(global_affine=affine, field=field, origin=fixed.origin)
    in_moving = transform_points(points, fixed.spacing, **kwargs)
    voxel = float(np.mean(fixed.spacing))
    assert np.linalg.norm(in_moving - truth(points), axis=1).mean() < 0.25 * voxel
    back = transform_points(in_moving, fixed.spacing, **kwargs, inverse_field=inverse,
                            to_moving=False)  # fmt: skip
    assert np.abs(back - points).max() < 0.02  # µm
    with pytest.raises(ValueError, match="inverse_field"):
        transform_points(in_moving, fixed.spacing, **kwargs, to_moving=False)


def test_a_field_array_placed_on_another_grid_than_it_records_is_refused(tmp_path):
    """transform_points used to read a stored field with the origin it was given (default 0),
    silently moving every point by the difference."""
    field = create_store(
        tmp_path / "f.zarr", (4, 5, 6), (1.0, 1.0, 1.0), (2.0, 0.0, 0.0), (4, 5, 6)
    )
    field[:] = 0.5  # µm along every axis
    points = np.array([[3.0, 2.0, 2.0]])
    with pytest.raises(ValueError, match=r"records its grid origin as \[2.0, 0.0, 0.0\]"):
        transform_points(points, (1.0, 1.0, 1.0), field=field)
    moved = transform_points(points, (1.0, 1.0, 1.0), field=field, origin=(2.0, 0.0, 0.0))
    np.testing.assert_allclose(moved, points + 0.5, atol=1e-6)


def test_each_level_is_made_from_the_finer_one_as_if_from_full_resolution(monkeypatch):
    rng = np.random.default_rng(3)
    image = texture(rng, (48, 64, 80))
    plan = [(4, 2.0), (2, 1.0)]
    sizes = []
    gaussian = deform_module.ndimage.gaussian_filter

    def recorded(data, *args, **kwargs):
        sizes.append(data.size)
        return gaussian(data, *args, **kwargs)

    monkeypatch.setattr(deform_module.ndimage, "gaussian_filter", recorded)
    coarse, fine = level_cascade(image, plan)
    assert sizes == [image.size, image.size // 8]  # one full-resolution pass, not one per level
    for level, (shrink, sigma) in zip((coarse, fine), plan, strict=True):
        direct = gaussian(image, level_sigma(shrink, sigma))[::shrink, ::shrink, ::shrink]
        assert level.shape == direct.shape
        inner = (slice(2, -2),) * 3  # away from the edges, where the two paddings differ
        error = np.abs(level[inner] - direct[inner]).max() / np.ptp(direct[inner])
        assert error < 0.02, error  # measured: 0.0 at the finest level, 0.01 at the coarse one


def texture(rng, shape):
    """A float32 texture with structure at 1-8 voxels (sums of smoothed noise)."""
    return sum(
        ndimage.gaussian_filter(rng.normal(size=shape), sigma) * sigma
        for sigma in (1.0, 2.0, 4.0, 8.0)
    ).astype(np.float32)
