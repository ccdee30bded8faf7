"""NaN and infinite voxels in a float image: read as background (0) by default, so no stage
trips on them and no output holds them, counted in the plan and the run's summary; or, when
the image's `nonfinite: error`, a stop that names the image, the region and the count."""

import json

import numpy as np
import pytest

from bigstream_core.io import ImageError, open_image, write_n5
from bigstream_core.phantom import preset, write_pair
from tests.conftest import demo_config, pair_config, run_snakemake

WHOLE = (slice(None),) * 3


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
    result is finite everywhere with 0 in the holes, and the global affine lands as on the
    clean pair (mean TRE under 0.5 µm, from 4.9 µm before)."""
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
    assert "moving image: 512 NaN or infinite voxels" in (out / "summary.txt").read_text()
    aligned = open_image(out / "aligned.ome.zarr").read(WHOLE)
    clean = open_image(pair / "moving.n5", "highres").read(WHOLE)
    assert aligned.dtype == np.float32 and np.isfinite(aligned).all()
    assert aligned.max() <= clean.max()  # no infinity, no saturation
    accuracy = json.loads((out / "qc" / "accuracy.json").read_text())["stages"]
    assert accuracy[-1]["mean_um"] < 0.5 < accuracy[0]["mean_um"], accuracy
