"""NaN and infinite voxels in a float image: read as background (0) by default, so no stage
trips on them and no output holds them, counted in the plan, by every block that reads them
and in the run's summary, and kept out of what the key points and the deformable metric
see; or, when the image's `nonfinite: error`, a stop that names the image, the region and
the count."""

import dataclasses
import json
import math

import numpy as np
import pytest

from bigstream_core.deform import DeformParams, register_tile
from bigstream_core.io import ImageError, array_image, open_image, write_n5
from bigstream_core.keypoints import detect_blobs, tile_keypoints
from bigstream_core.phantom import make_pair, preset, write_pair
from bigstream_core.resample import voxel_centres
from bigstream_core.tiling import tile_grid
from bigstream_core.transforms import affine_map
from bigstream_workflow.summary import nonfinite_lines
from tests.conftest import demo_config, pair_config, run_snakemake

WHOLE = (slice(None),) * 3
# test_deform's pair ('small' with a smooth deformation of up to 4.4 µm on an affine: sparse
# cells in a textured tissue), cut to one deform block
DEFORMED = dataclasses.replace(preset("small"), fixed_shape=(48, 96, 96),
                               moving_shape=(50, 100, 92), deform_amplitude_um=4.4,
                               deform_scale_um=18.0)  # fmt: skip
HOLE = (slice(20, 28), slice(40, 56), slice(40, 56))
"""A box of the fixed image's voxels (z, y, x) in its bright tissue (a cell's: 950 counts on
a 100-count background)."""


@pytest.fixture(scope="module")
def deformed():
    """The fixed image (float32), the moving image (float32) and the truth of `DEFORMED`."""
    fixed, moving, truth = make_pair(DEFORMED)
    return fixed.compute().astype(np.float32), moving.compute().astype(np.float32), truth


def near(voxels: np.ndarray, box, reach: float) -> np.ndarray:
    """Bool (N,): the voxel positions (N, 3) within ``reach`` voxels of ``box`` along every
    axis (a cube around the box, as a maximum filter reaches)."""
    inside = np.ones(len(voxels), dtype=bool)
    for axis, bounds in enumerate(box):
        position = np.round(voxels[:, axis])
        inside &= (position >= bounds.start - reach) & (position < bounds.stop + reach)
    return inside


def float_volume_with_holes(tmp_path):
    volume = np.random.default_rng(0).random((8, 12, 16)).astype(np.float32) + 1
    volume[1:3, 2:4, 3:5] = np.nan
    volume[5, 6, 7] = np.inf
    volume[6, 0, 0] = -np.inf
    write_n5(volume, tmp_path / "f.n5", "s0", (1.0, 1.0, 1.0), chunks=(4, 4, 4))
    return volume


def test_nonfinite_voxels_read_as_background_or_stop_with_where_and_how_many(tmp_path):
    volume = float_volume_with_holes(tmp_path)
    image = open_image(tmp_path / "f.n5", "s0")
    data = image.read(WHOLE)
    bad = ~np.isfinite(volume)
    assert np.isfinite(data).all() and (data[bad] == 0).all()
    np.testing.assert_array_equal(data[~bad], volume[~bad])
    assert image.count_nonfinite() == bad.sum() == 10
    strict = open_image(tmp_path / "f.n5", "s0", nonfinite="error")
    assert strict.read((slice(3, 5), slice(None), slice(None))).shape == (2, 12, 16)  # clean
    with pytest.raises(ImageError, match=r"f.n5.* 8 NaN or infinite voxels in z 0:4, y 0:12, "
                                         r"x 0:16; repair the image"):  # fmt: skip
        strict.read((slice(0, 4), slice(None), slice(None)))
    with pytest.raises(ImageError, match=r"nonfinite 'zero'; expected one of background, error"):
        open_image(tmp_path / "f.n5", "s0", nonfinite="zero")


@pytest.mark.slow
def test_a_float_moving_image_with_nan_and_inf_blocks_registers_and_none_reaches_the_output(
    tmp_path,
):
    """The 'small' pair with its moving image as float32, a NaN block and a +inf block in the
    tissue of both levels: the run finishes, the plan counts them, the summary warns, the
    result is finite everywhere with 0 in the holes, the resample block counts them and the
    summary names it, and the global affine lands as on the clean pair (mean TRE under 0.5
    µm, from 4.9 µm before)."""
    pair = tmp_path / "pair"
    write_pair(pair, preset("small"), ome_zarr=False)
    holes = {"highres": [(slice(20, 28), slice(60, 76), slice(60, 76)), np.nan],
             "lowres": [(slice(10, 14), slice(30, 38), slice(30, 38)), np.nan]}  # fmt: skip
    spacing = open_image(pair / "moving.n5", "highres").spacing
    for level, factors in (("highres", (1, 1, 1)), ("lowres", (2, 2, 2))):
        image = open_image(pair / "moving.n5", level)
        data = image.read(WHOLE).astype(np.float32)
        data[holes[level][0]] = np.nan
        data[tuple(slice(s.start + 20, s.stop + 20) if i else s
                   for i, s in enumerate(holes[level][0]))] = np.inf  # fmt: skip
        write_n5(data, pair / "float.n5", level, spacing, downsampling_factors=factors)
        assert open_image(pair / "float.n5", level).origin == image.origin
    out = tmp_path / "results"
    config = pair_config(pair, out, **demo_config())
    config["moving"] = {"path": str(pair / "float.n5")}
    # the global affine alone (0.012 µm on the clean pair), in one key-point tile per image
    # and one resample block: the holes' effect on it is what is tested, quickly
    config["deform"] = {**config["deform"], "enabled": False}
    config["local_affine"] = {**config["local_affine"], "enabled": False}
    config["global_affine"] = {**config["global_affine"], "blocksize": [48, 96, 96]}
    config["resample"] = {**config["resample"], "blocksize": [80, 160, 160]}
    result = run_snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = json.loads((out / "plan" / "images.json").read_text())["nonfinite_lowres_voxels"]
    assert counts == {"fixed": 0, "moving": 2 * 4 * 8 * 8}
    summary = (out / "summary.txt").read_text()
    assert "moving image: 512 NaN or infinite voxels" in summary
    (block,) = json.loads((out / "aligned" / "complete.json").read_text())["blocks"]
    assert block["nonfinite_moving"] == [2 * 8 * 16 * 16]  # the one block's window, both holes
    assert (f"resample blocks read NaN or infinite voxels as background (0): moving 4096 "
            f"(halos included), in 1 of 1 blocks: {block['tile']}") in summary  # fmt: skip
    aligned = open_image(out / "aligned.ome.zarr").read(WHOLE)
    clean = open_image(pair / "moving.n5", "highres").read(WHOLE)
    assert aligned.dtype == np.float32 and np.isfinite(aligned).all()
    assert aligned.max() <= clean.max()  # no infinity, no saturation
    accuracy = json.loads((out / "qc" / "accuracy.json").read_text())["stages"]
    assert accuracy[-1]["mean_um"] < 0.5 < accuracy[0]["mean_um"], accuracy


def test_key_points_keep_clear_of_a_hole_whose_edges_make_blobs(deformed):
    """A NaN box in bright tissue reads as a dark hole whose edges look like blobs: on the
    0-filled image, 10 blobs lie within 3 voxels of it where the clean image has 4. The key
    points of a tile keep max_radius + cc_radius voxels away from it, and find as many
    elsewhere."""
    data = deformed[0]
    assert data[HOLE].mean() > 5 * DEFORMED.background_level  # bright tissue
    holed = data.copy()
    holed[HOLE] = np.nan
    min_radius, max_radius, border = 1.5, 5, 8  # the demo's key points
    rims = {}
    for name, image in (("clean", data), ("hole as 0", np.nan_to_num(holed, nan=0.0))):
        blobs = detect_blobs(image, min_radius, max_radius)
        rims[name] = int(near(blobs[["z", "y", "x"]].to_numpy(), HOLE, 3).sum())
    print(f"blobs within 3 voxels of the hole: {rims}")
    assert rims["hole as 0"] > rims["clean"]  # the hole's edges make blobs
    tile = tile_grid(data.shape, data.shape)[0]
    points = {
        name: tile_keypoints(array_image(image, (1.0, 1.0, 1.0)), tile, min_radius,
                             max_radius, 10, border)[["z_um", "y_um", "x_um"]].to_numpy()
        for name, image in (("clean", data), ("hole", holed))
    }  # fmt: skip
    reach = math.ceil(max_radius) + border
    assert not near(points["hole"], HOLE, reach).any()
    away = {name: int((~near(found, HOLE, reach)).sum()) for name, found in points.items()}
    print(f"key points: {len(points['hole'])} with the hole, {len(points['clean'])} without; "
          f"away from it: {away}")  # fmt: skip
    assert away["hole"] >= 0.9 * away["clean"]


def test_deform_leaves_a_moving_hole_out_of_its_metric_and_counts_it(deformed):
    """One deform block on top of the true affine, the moving image with a NaN box in
    bright tissue: the field within 8 voxels of the hole stays within 1.5 voxels of the
    true deformation (1.13 at worst; 0.70 on the clean image); with the hole's edges in the
    metric it was off by 4.3 voxels there. The block's report counts the hole's voxels."""
    fixed_data, moving_data, truth = deformed
    fixed = array_image(fixed_data, DEFORMED.spacing)
    centre = voxel_centres(tuple(slice((s.start + s.stop) // 2, (s.start + s.stop) // 2 + 1)
                                 for s in HOLE), fixed.spacing, fixed.origin)  # fmt: skip
    middle = np.round(truth(centre)[0] / np.asarray(DEFORMED.spacing)).astype(int)
    hole = tuple(slice(c - (s.stop - s.start) // 2, c + (s.stop - s.start) // 2)
                 for c, s in zip(middle, HOLE, strict=True))  # fmt: skip
    assert moving_data[hole].mean() > 5 * DEFORMED.background_level  # bright tissue
    holed = moving_data.copy()
    holed[hole] = np.nan
    tile = tile_grid(fixed.shape, fixed.shape, (0, 0, 0), 2)[0]
    params = DeformParams(mask_threshold=150)  # test_deform's: above the 100-count background
    nodes = voxel_centres(tuple(slice(a, b, 2) for a, b in tile.halo), fixed.spacing,
                          fixed.origin)  # fmt: skip
    close = near(nodes / np.asarray(fixed.spacing), HOLE, 8)
    truth_vox = truth.displacement(nodes[close]) / np.asarray(fixed.spacing)
    errors, reports = {}, {}
    for name, moving in (("clean", moving_data), ("hole", holed)):
        field, reports[name] = register_tile(
            fixed, array_image(moving, DEFORMED.spacing), affine_map(truth.affine), tile, params
        )
        found = field.reshape(-1, 3)[close] / np.asarray(fixed.spacing)
        errors[name] = float(np.sqrt(((found - truth_vox) ** 2).sum(axis=1)).max())
    affine_only = float(np.sqrt((truth_vox**2).sum(axis=1)).max())
    print(f"largest error within 8 voxels of the hole (voxels): {errors}; affine alone "
          f"{affine_only:.2f}")  # fmt: skip
    assert errors["hole"] < 1.5 < affine_only, errors
    assert reports["hole"]["nonfinite_moving"] == holed.size - np.isfinite(holed).sum() == 2048
    assert reports["hole"]["nonfinite_fixed"] == reports["clean"]["nonfinite_moving"] == 0


def test_the_summary_sums_the_blocks_counts_per_stage_and_names_the_blocks(tmp_path):
    """The deform report's and the resample manifests' counts, as their jobs write them."""
    (tmp_path / "deform").mkdir()
    (tmp_path / "deform" / "report.tsv").write_text(
        "tile\tnonfinite_fixed\tnonfinite_moving\tstatus\n"
        "z0_y0_x0\t0\t0\tok\nz0_y0_x1\t3\t40\tok\nz0_y1_x0\t0\t2\tempty\n"
    )
    (tmp_path / "aligned").mkdir()
    blocks = [{"tile": "z0_y0_x0", "nonfinite_moving": [0, 0]},
              {"tile": "z0_y0_x1", "nonfinite_moving": [5, 7]}]  # fmt: skip
    (tmp_path / "aligned" / "complete.json").write_text(json.dumps({"blocks": blocks}))
    assert nonfinite_lines(str(tmp_path)) == [
        "  WARNING: deform blocks read NaN or infinite voxels as background (0): fixed 3, "
        "moving 42 (halos included), in 2 of 3 blocks: z0_y0_x1, z0_y1_x0",
        "  WARNING: resample blocks read NaN or infinite voxels as background (0): moving 12 "
        "(halos included), in 1 of 2 blocks: z0_y0_x1",
    ]
