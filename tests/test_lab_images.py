"""Images as labs have them, end to end: light-sheet voxels of 4 x 0.5 x 0.5 µm, a moving round
imaged at other spacings (3.5 x 0.6 x 0.65 µm), as uint8 against a uint16 fixed round, with a
low-res level downsampled in y and x only (4 x 2 x 2 µm), as pyramids of such data are."""

import json

import numpy as np
import pytest
import zarr

from bigstream_core.io import open_image
from bigstream_core.phantom import GroundTruth, PhantomSpec, write_pair
from bigstream_core.resample import resample
from tests.conftest import pair_config, run_snakemake

WHOLE = (slice(None),) * 3

ANISOTROPIC = PhantomSpec(
    fixed_shape=(40, 256, 256),  # 160 x 128 x 128 µm
    moving_shape=(44, 220, 200),
    spacing=(4.0, 0.5, 0.5),
    moving_spacing=(3.5, 0.6, 0.65),
    radius_range_vox=(1.5, 16.0),  # cells of radius 6-8 µm: 1.5-2 voxels in z, 12-16 in y, x
    cell_density=0.8,
    moving_dtype="uint8",
    moving_gain=1 / 16,  # the fixed round's counts (background 100, cells to ~3000) in 8 bits
    deform_amplitude_um=3.0,
    lowres_factors=(1, 4, 4),
    chunks=(16, 128, 128),
)


@pytest.mark.slow
def test_anisotropic_rounds_at_different_spacings_and_dtypes_register_on_ground_truth(tmp_path):
    pair = tmp_path / "pair"
    write_pair(pair, ANISOTROPIC, ome_zarr=False)
    out = tmp_path / "results"
    config = pair_config(
        pair,
        out,
        # key points of radius 1.5-5 low-res voxels (the cells are 1.5-4), in one tile
        global_affine={"blocksize": [40, 64, 64], "min_radius": 1.5, "max_radius": 5,
                       "cc_radius": 6},
        local_affine={"blocksize": [40, 32, 32], "overlap": 0.25, "cc_radius": 5,
                      "min_matches": 12},
        deform={"blocksize": [40, 128, 128], "mask_threshold": 150},
        # cubic: its overshoot at saturated voxels must clip at 255, not wrap around
        resample={"blocksize": [40, 128, 128], "order": 3},
    )  # fmt: skip
    result = run_snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-3000:]
    images = json.loads((out / "plan" / "images.json").read_text())["images"]
    assert images["fixed"]["lowres"]["spacing_um"] == pytest.approx([4.0, 2.0, 2.0])
    assert images["moving"]["highres"]["spacing_um"] == pytest.approx([3.5, 0.6, 0.65])
    # on ground truth: every stage brings the images closer, and the result lands within one
    # high-res voxel along y and x (an eighth of one along z) on average
    accuracy = json.loads((out / "qc" / "accuracy.json").read_text())
    means = [stage["mean_um"] for stage in accuracy["stages"]]
    print("TRE per stage, µm:", [round(mean, 3) for mean in means])
    assert means[0] > 5 and all(a > b for a, b in zip(means, means[1:], strict=False))
    assert accuracy["mean_um"] < 0.5 and accuracy["p95_um"] < 1.0
    # the result: the moving round's dtype on the fixed grid, what the true transform gives
    fixed = open_image(pair / "fixed.n5", "highres")
    moving = open_image(pair / "moving.n5", "highres")
    aligned = open_image(out / "aligned.ome.zarr")
    assert aligned.dtype == np.uint8 and aligned.shape == fixed.shape
    assert aligned.spacing == pytest.approx(fixed.spacing)
    truth = GroundTruth.from_json(pair / "truth.json")
    ideal = resample(moving, truth, fixed.shape, fixed.spacing, fixed.origin, order=3).compute()
    data = aligned.read(WHOLE)
    inside = (data > 0) & (ideal > 0)
    assert np.corrcoef(data[inside], ideal[inside])[0, 1] > 0.95
    # where the fixed round is far above what 8 bits hold after the gain (255 x 16 counts),
    # the moving round is saturated: the result must read ~255 there, as cubic overshoot
    # past 255 wrapped around would not (the reference above casts as the workflow does,
    # so this checks against the fixed image instead)
    saturated = fixed.read(WHOLE) > 4300
    assert saturated.sum() > 1000 and np.mean(data[saturated] >= 200) > 0.95
    assert zarr.open_array(out / "aligned.ome.zarr", path="0", mode="r").dtype == np.uint8
