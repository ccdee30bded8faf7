"""Tests of bigstream_core.io on real N5 / Zarr / OME-Zarr stores written to tmp_path."""

import json
import pickle
import tracemalloc

import dask
import dask.array as da
import numpy as np
import pytest
import tensorstore as ts
import zarr
from ome_zarr_models.v04 import Image as OmeImageV04

from bigstream_core.io import (
    Image,
    ImageError,
    create_ome_zarr,
    downsample_level,
    finish_ome_zarr,
    open_image,
    pyramid_shapes,
    write_n5,
    write_ome_zarr,
    write_zarr,
)

SHAPE = (5, 7, 11)  # z, y, x: distinct so that any axis swap shows


@pytest.fixture
def volume():
    return np.random.default_rng(0).integers(0, 60000, SHAPE).astype(np.uint16)


def _everything(image: Image) -> np.ndarray:
    return image.read((slice(None), slice(None), slice(None)))


def _write_n5_by_hand(root, dataset, array_xyz, block_xyz, **attributes):
    """An N5 dataset written straight through tensorstore, in N5's own x, y, z order."""
    spec = {
        "driver": "n5",
        "kvstore": {"driver": "file", "path": str(root)},
        "path": dataset,
        "metadata": {
            "dimensions": list(array_xyz.shape),
            "blockSize": list(block_xyz),
            "dataType": array_xyz.dtype.name,
            "compression": {"type": "gzip"},
            **attributes,
        },
        "create": True,
    }
    ts.open(spec).result().write(array_xyz).result()


def _set_attributes(file, **attributes):
    attrs = json.loads(file.read_text()) if file.exists() else {}
    file.write_text(json.dumps({**attrs, **attributes}))


# Round trips ---------------------------------------------------------------------------------

REGION = (slice(1, 4), slice(2, 7), slice(3, 10))


def _check_round_trip(image: Image, expected: np.ndarray):
    assert image.shape == expected.shape
    assert image.dtype == expected.dtype
    np.testing.assert_array_equal(_everything(image), expected)
    np.testing.assert_array_equal(image.to_dask().compute(), expected)
    np.testing.assert_array_equal(image.to_dask(chunks=(2, 3, 4)).compute(), expected)
    np.testing.assert_array_equal(image.read(REGION), expected[REGION])


def test_n5_round_trip(tmp_path, volume):
    image = write_n5(volume, tmp_path / "a.n5", "g/raw", (3.0, 2.0, 1.0), chunks=(2, 3, 4))
    assert (image.format, image.dataset, image.chunks) == ("n5", "g/raw", (2, 3, 4))
    _check_round_trip(image, volume)
    _check_round_trip(open_image(tmp_path / "a.n5", "g/raw"), volume)


@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("dataset", [None, "group/raw"])
def test_zarr_round_trip(tmp_path, volume, zarr_format, dataset):
    path = tmp_path / "a.zarr"
    image = write_zarr(
        volume, path, dataset, spacing=(3, 2, 1), chunks=(2, 3, 4), zarr_format=zarr_format
    )
    assert (image.format, image.dataset, image.chunks) == ("zarr", dataset, (2, 3, 4))
    assert image.spacing == (3.0, 2.0, 1.0)
    assert zarr.open(store=path, path=dataset or "", mode="r").metadata.zarr_format == zarr_format
    _check_round_trip(image, volume)


def test_ome_zarr_round_trip(tmp_path, volume):
    image = write_ome_zarr(tmp_path / "a.ome.zarr", volume, (3, 2, 1), chunks=(2, 3, 4))
    assert (image.format, image.dataset, image.chunks) == ("ome-zarr", "0", (2, 3, 4))
    _check_round_trip(image, volume)


def test_dask_input_is_written_block_wise(tmp_path, volume):
    lazy = da.from_array(volume, chunks=(5, 7, 3))  # not aligned with the storage chunks
    image = write_n5(lazy, tmp_path / "a.n5", "raw", (1, 1, 1), chunks=(2, 4, 4))
    np.testing.assert_array_equal(_everything(image), volume)
    image = write_zarr(lazy + 1, tmp_path / "a.zarr", chunks=(2, 4, 4))
    np.testing.assert_array_equal(_everything(image), volume + 1)
    assert image.spacing == (1.0, 1.0, 1.0)  # no spacing given: voxel units


def test_to_dask_blocks_are_the_storage_chunks_and_read_alone(tmp_path, volume):
    image = write_n5(volume, tmp_path / "a.n5", "raw", (1, 1, 1), chunks=(2, 3, 4))
    lazy = image.to_dask()
    assert lazy.chunks == ((2, 2, 1), (3, 3, 1), (4, 4, 3))
    np.testing.assert_array_equal(lazy.blocks[1, 2, 0].compute(), volume[2:4, 6:7, 0:4])
    with dask.config.set(scheduler="threads"):
        total = dask.compute(lazy.sum(dtype=np.int64))[0]
    assert total == volume.sum(dtype=np.int64)


@pytest.mark.parametrize("kind", ["n5", "zarr"])
def test_a_dask_block_reads_only_its_own_chunk(tmp_path, volume, kind):
    if kind == "n5":
        image = write_n5(volume, tmp_path / "a.n5", "raw", (1, 1, 1), chunks=(2, 3, 4))
        first = tmp_path / "a.n5" / "raw" / "0" / "0" / "0"
    else:
        image = write_zarr(volume, tmp_path / "a.zarr", chunks=(2, 3, 4))
        first = tmp_path / "a.zarr" / "c" / "0" / "0" / "0"
    chunk_files = [
        f for f in first.parent.parent.parent.rglob("*") if f.is_file() and f.name.isdigit()
    ]
    assert first in chunk_files and len(chunk_files) == 3 * 3 * 3
    for file in chunk_files:
        if file != first:
            file.write_bytes(b"corrupt")
    lazy = image.to_dask()
    np.testing.assert_array_equal(lazy.blocks[0, 0, 0].compute(), volume[:2, :3, :4])
    with pytest.raises(Exception):  # noqa: B017 - any decoding error proves the chunk was read
        lazy.blocks[0, 0, 1].compute()


def test_image_pickles_without_its_open_store(tmp_path, volume):
    image = write_n5(volume, tmp_path / "a.n5", "raw", (1, 1, 1))
    _everything(image)  # opens and caches the store
    copy = pickle.loads(pickle.dumps(image))
    assert copy == image
    np.testing.assert_array_equal(_everything(copy), volume)


def test_read_rejects_regions_outside_the_image(tmp_path, volume):
    image = write_zarr(volume, tmp_path / "a.zarr", spacing=(1, 1, 1))
    with pytest.raises(ImageError, match="axis x"):
        image.read((slice(0, 5), slice(0, 7), slice(0, 12)))
    with pytest.raises(ImageError, match="step"):
        image.read((slice(0, 5), slice(0, 7, 2), slice(0, 11)))


# Axis order ----------------------------------------------------------------------------------


def test_write_n5_stores_metadata_in_xyz(tmp_path, volume):
    image = write_n5(volume, tmp_path / "a.n5", "raw", (3.0, 2.0, 1.0), (1, 2, 4), chunks=(2, 3, 4))
    assert (image.shape, image.chunks) == (SHAPE, (2, 3, 4))
    assert image.spacing == (3.0, 4.0, 4.0)
    assert image.origin == (0.0, 1.0, 1.5)
    attrs = json.loads((tmp_path / "a.n5" / "raw" / "attributes.json").read_text())
    assert attrs["dimensions"] == [11, 7, 5]
    assert attrs["blockSize"] == [4, 3, 2]
    assert attrs["pixelResolution"] == {"dimensions": [1.0, 2.0, 3.0], "unit": "um"}
    assert attrs["downsamplingFactors"] == [4, 2, 1]
    assert json.loads((tmp_path / "a.n5" / "attributes.json").read_text())["n5"].startswith("2.")


def test_n5_written_in_xyz_opens_as_its_transpose(tmp_path):
    xyz = np.arange(11 * 7 * 5, dtype=np.float32).reshape(11, 7, 5)
    _write_n5_by_hand(tmp_path / "data", "raw", xyz, (4, 3, 2), pixelResolution=[1, 2, 3])
    image = open_image(tmp_path / "data", "raw")  # no .n5 suffix, no root attributes
    assert image.format == "n5"
    assert image.shape == (5, 7, 11)
    assert image.chunks == (2, 3, 4)
    assert image.spacing == (3.0, 2.0, 1.0)
    np.testing.assert_array_equal(_everything(image), xyz.T)
    np.testing.assert_array_equal(image.to_dask().compute(), xyz.T)
    np.testing.assert_array_equal(image.read(REGION), xyz.T[REGION])


# Spacing and origin from metadata ------------------------------------------------------------


@pytest.fixture
def n5_xyz(tmp_path):
    """A (z, y, x) = (5, 7, 11) N5 dataset "g/raw" written by hand, without spacing metadata."""
    root = tmp_path / "c.n5"
    _write_n5_by_hand(root, "g/raw", np.zeros((11, 7, 5), np.uint8), (4, 4, 4))
    _set_attributes(root / "attributes.json", n5="2.5.1")
    return root


@pytest.mark.parametrize(
    ("attributes", "spacing"),
    [
        ({"pixelResolution": [0.25, 0.5, 2.0]}, (2.0, 0.5, 0.25)),
        ({"pixelResolution": {"dimensions": [0.25, 0.5, 2.0], "unit": "um"}}, (2.0, 0.5, 0.25)),
        ({"pixelResolution": {"dimensions": [0.25, 0.5, 2.0], "unit": "µm"}}, (2.0, 0.5, 0.25)),
        ({"pixelResolution": {"dimensions": [250, 500, 2000], "unit": "nm"}}, (2.0, 0.5, 0.25)),
        ({"resolution": [0.25, 0.5, 2.0]}, (2.0, 0.5, 0.25)),
        ({"resolution": [250, 500, 2000], "units": ["nm", "nm", "nm"]}, (2.0, 0.5, 0.25)),
    ],
)
def test_n5_spacing_styles(n5_xyz, attributes, spacing):
    _set_attributes(n5_xyz / "g" / "raw" / "attributes.json", **attributes)
    image = open_image(n5_xyz, "g/raw")
    assert image.spacing == pytest.approx(spacing)
    assert image.origin == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("group", [".", "g"])
def test_n5_spacing_from_a_parent_group(n5_xyz, group):
    _set_attributes(n5_xyz / group / "attributes.json", pixelResolution=[0.25, 0.5, 2.0])
    assert open_image(n5_xyz, "g/raw").spacing == (2.0, 0.5, 0.25)


def test_n5_dataset_resolution_wins_over_the_root(n5_xyz):
    _set_attributes(n5_xyz / "attributes.json", pixelResolution=[9, 9, 9])
    _set_attributes(n5_xyz / "g" / "raw" / "attributes.json", pixelResolution=[0.25, 0.5, 2.0])
    assert open_image(n5_xyz, "g/raw").spacing == (2.0, 0.5, 0.25)


def test_n5_downsampling_factors_give_spacing_and_origin(n5_xyz):
    _set_attributes(
        n5_xyz / "g" / "raw" / "attributes.json",
        pixelResolution={"dimensions": [0.25, 0.5, 2.0], "unit": "um"},
        downsamplingFactors=[4, 2, 1],
    )
    image = open_image(n5_xyz, "g/raw")
    assert image.spacing == (2.0, 1.0, 1.0)
    # a low-res voxel averages f high-res voxels: its centre sits (f - 1) / 2 of them in
    assert image.origin == (0.0, 0.25, 0.375)


def test_config_spacing_overrides_metadata(n5_xyz, tmp_path, volume):
    _set_attributes(n5_xyz / "g" / "raw" / "attributes.json", pixelResolution=[9, 9, 9])
    assert open_image(n5_xyz, "g/raw", spacing=(3, 2, 1)).spacing == (3.0, 2.0, 1.0)
    write_zarr(volume, tmp_path / "plain.zarr")
    assert open_image(tmp_path / "plain.zarr", spacing=[3, 2, 1]).spacing == (3.0, 2.0, 1.0)


def test_config_spacing_override_keeps_the_downsampled_origin_consistent(n5_xyz):
    _set_attributes(n5_xyz / "g" / "raw" / "attributes.json", downsamplingFactors=[4, 2, 1])
    image = open_image(n5_xyz, "g/raw", spacing=(2.0, 1.0, 1.0))
    assert image.origin == (0.0, 0.25, 0.375)


def test_plain_zarr_with_n5_style_resolution(tmp_path, volume):
    write_zarr(volume, tmp_path / "a.zarr")
    array = zarr.open_array(tmp_path / "a.zarr", mode="a")
    array.attrs["pixelResolution"] = {"dimensions": [0.25, 0.5, 2.0], "unit": "um"}
    assert open_image(tmp_path / "a.zarr").spacing == (2.0, 0.5, 0.25)


def test_ome_zarr_04_level_scale_and_translation(tmp_path, volume):
    path = tmp_path / "a.ome.zarr"
    write_ome_zarr(path, volume, (2.0, 0.5, 0.25), origin=(10.0, 20.0, 30.0), levels=2)
    level1 = open_image(path, "1")
    assert level1.shape == (3, 4, 6)
    assert level1.spacing == (4.0, 1.0, 0.5)
    assert level1.origin == (11.0, 20.25, 30.125)
    assert open_image(path).dataset == "0"  # None: the finest level


def test_ome_zarr_global_transform_and_nm_axes(tmp_path, volume):
    path = tmp_path / "a.ome.zarr"
    write_ome_zarr(path, volume, (2.0, 0.5, 0.25), origin=(1.0, 2.0, 3.0), levels=1)
    group = zarr.open_group(path, mode="a")
    multiscales = group.attrs["multiscales"]
    multiscales[0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [10, 100, 1000]},
        {"type": "translation", "translation": [5, 6, 7]},
    ]
    for axis in multiscales[0]["axes"]:
        axis["unit"] = "nanometer"
    group.attrs["multiscales"] = multiscales
    image = open_image(path, "0")
    assert image.spacing == pytest.approx((0.02, 0.05, 0.25))
    assert image.origin == pytest.approx((0.015, 0.206, 3.007))


def test_ome_zarr_05_written_by_hand(tmp_path):
    """NGFF 0.5: Zarr v3, metadata under "ome", a singleton channel axis before z, y, x."""
    root = tmp_path / "v05.ome.zarr"
    czyx = np.arange(5 * 7 * 11, dtype=np.uint8).reshape(1, 5, 7, 11)
    zarr.create_array(root / "s1", data=czyx, chunks=(1, 2, 3, 4), zarr_format=3)
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"
    ]
    transforms = [
        {"type": "scale", "scale": [1, 2.0, 0.5, 0.25]},
        {"type": "translation", "translation": [0, 1.0, 2.0, 3.0]},
    ]
    ome = {
        "version": "0.5",
        "multiscales": [
            {"axes": axes, "datasets": [{"path": "s1", "coordinateTransformations": transforms}]}
        ],
    }
    group = {"zarr_format": 3, "node_type": "group", "attributes": {"ome": ome}}
    (root / "zarr.json").write_text(json.dumps(group))
    for dataset in (None, "s1"):
        image = open_image(root, dataset)
        assert (image.format, image.dataset, image.shape) == ("ome-zarr", "s1", (5, 7, 11))
        assert image.chunks == (2, 3, 4)
        assert image.spacing == (2.0, 0.5, 0.25)
        assert image.origin == (1.0, 2.0, 3.0)
        np.testing.assert_array_equal(image.to_dask().compute(), czyx[0])
        np.testing.assert_array_equal(image.read(REGION), czyx[0][REGION])


def test_ome_zarr_group_inside_a_container(tmp_path, volume):
    zarr.open_group(tmp_path / "pair.zarr", mode="w", zarr_format=2)
    write_ome_zarr(tmp_path / "pair.zarr" / "fixed", volume, (3, 2, 1), levels=2)
    image = open_image(tmp_path / "pair.zarr", "fixed")
    assert (image.format, image.dataset, image.spacing) == ("ome-zarr", "fixed/0", (3.0, 2.0, 1.0))
    assert open_image(tmp_path / "pair.zarr", "fixed/1").spacing == (6.0, 4.0, 2.0)


# OME-Zarr writer -----------------------------------------------------------------------------


def test_written_ome_zarr_validates_and_pyramid_is_the_2x_mean(tmp_path):
    volume = np.random.default_rng(1).integers(0, 250, (66, 70, 130)).astype(np.uint8)
    path = tmp_path / "a.ome.zarr"
    image = write_ome_zarr(
        path, volume, (2.0, 0.5, 0.25), chunks=(32, 32, 32), name="fixed", attrs={"run": {"a": 1}}
    )
    group = zarr.open_group(path, mode="r")
    model = OmeImageV04.from_zarr(group)
    multiscale = model.attributes.multiscales[0]
    assert [d.path for d in multiscale.datasets] == ["0", "1", "2"]  # 130 -> 65 -> 33 < 64
    assert group.attrs["run"] == {"a": 1}
    assert group["0"].metadata.dimension_separator == "/"
    assert image.chunks == (32, 32, 32)

    level1 = open_image(path, "1").read((slice(None), slice(None), slice(None)))
    assert level1.dtype == np.uint8 and level1.shape == (33, 35, 65)
    mean = volume.reshape(33, 2, 35, 2, 65, 2).mean(axis=(1, 3, 5))
    np.testing.assert_array_equal(level1, np.round(mean).astype(np.uint8))

    level2 = open_image(path, "2")
    assert level2.shape == (17, 18, 33)  # odd lengths: the edge voxel is repeated
    padded = np.pad(level1.astype(float), [(0, 1), (0, 1), (0, 1)], mode="edge")
    expected = np.round(padded.reshape(17, 2, 18, 2, 33, 2).mean(axis=(1, 3, 5)))
    np.testing.assert_array_equal(_everything(level2), expected.astype(np.uint8))
    assert level2.spacing == (8.0, 2.0, 1.0)
    assert level2.origin == pytest.approx((3.0, 0.75, 0.375))  # 1 + 2, 0.25 + 0.5, ...


def test_the_pyramid_is_built_in_chunk_sized_pieces_not_whole_levels(tmp_path):
    """A level of 64 x 512 x 512 uint16 (32 MiB) in 32^3 chunks: building its pyramid holds a
    few chunks at a time (measured: well under a tenth of the level), and gives the mean."""
    volume = np.random.default_rng(2).integers(0, 4000, (64, 512, 512)).astype(np.uint16)
    path = tmp_path / "big.ome.zarr"
    create_ome_zarr(path, volume.shape, volume.dtype, (32, 32, 32))["0"][...] = volume
    tracemalloc.start()
    for level in range(1, len(pyramid_shapes(volume.shape))):
        downsample_level(path, level)
    finish_ome_zarr(path, (1.0, 1.0, 1.0))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < volume.nbytes / 10, f"peak {peak / 2**20:.1f} MiB"
    level1 = _everything(open_image(path, "1"))
    mean = volume.reshape(32, 2, 256, 2, 256, 2).mean(axis=(1, 3, 5))
    np.testing.assert_array_equal(level1, np.round(mean).astype(np.uint16))


def test_ome_zarr_keeps_float_dtype_and_stops_at_five_levels(tmp_path):
    lazy = da.ones((1, 1100, 1100), dtype=np.float32, chunks=(1, 550, 550))
    path = tmp_path / "f.ome.zarr"
    write_ome_zarr(path, lazy, (1, 1, 1), chunks=(1, 256, 256))
    levels = [open_image(path, str(k)) for k in range(5)]
    assert [lv.shape for lv in levels][-1] == (1, 69, 69)
    assert all(lv.dtype == np.float32 for lv in levels)
    assert levels[-1].spacing == (1.0, 16.0, 16.0)  # a length-1 axis is not downsampled
    with pytest.raises(ImageError, match="not found; the container root holds: 0, 1, 2, 3, 4;"):
        open_image(path, "5")


# Errors --------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(ImageError, match="does not exist") as error:
        open_image(tmp_path / "nope.n5", "raw")
    assert "nope.n5" in str(error.value) and "'raw'" in str(error.value)


def test_not_a_container(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(ImageError, match="not a recognised container"):
        open_image(tmp_path / "folder")


@pytest.mark.parametrize("kind", ["n5", "zarr", "ome-zarr"])
def test_wrong_dataset_lists_what_exists(tmp_path, volume, kind):
    path = tmp_path / "c"
    if kind == "n5":
        for name in ("moving", "fixed"):
            write_n5(volume, path, f"{name}/s0", (1, 1, 1))
        listed = "fixed, moving"
    elif kind == "zarr":
        for name in ("moving", "fixed"):
            write_zarr(volume, path, name, zarr_format=2)
        listed = "fixed, moving"
    else:
        write_ome_zarr(path, volume, (1, 1, 1), levels=2)
        listed = "0, 1"
    with pytest.raises(ImageError, match="not found") as error:
        open_image(path, "fixd")
    message = str(error.value)
    assert str(path) in message and "'fixd'" in message and listed in message


def test_n5_group_is_not_a_dataset(tmp_path, volume):
    write_n5(volume, tmp_path / "c.n5", "fixed/s0", (1, 1, 1))
    with pytest.raises(ImageError, match="is a group, not a dataset; it holds: s0"):
        open_image(tmp_path / "c.n5", "fixed")


def test_2d_arrays_are_refused(tmp_path):
    zarr.create_array(tmp_path / "a.zarr", data=np.zeros((4, 5), np.uint8))
    with pytest.raises(ImageError, match=r"shape \(4, 5\) \(2D\); expected 3D") as error:
        open_image(tmp_path / "a.zarr")
    assert "a.zarr" in str(error.value)
    with pytest.raises(ImageError, match="3D"):
        write_n5(np.zeros((4, 5)), tmp_path / "b.n5", "raw", (1, 1, 1))


def test_zero_size_axis_is_refused(tmp_path):
    zarr.create_array(tmp_path / "a.zarr", shape=(3, 0, 4), dtype=np.uint8)
    with pytest.raises(ImageError, match="empty axis") as error:
        open_image(tmp_path / "a.zarr", spacing=(1, 1, 1))
    assert "a.zarr" in str(error.value)


def test_unknown_unit_is_refused(n5_xyz):
    _set_attributes(
        n5_xyz / "g" / "raw" / "attributes.json",
        pixelResolution={"dimensions": [1, 2, 3], "unit": "furlong"},
    )
    with pytest.raises(ImageError, match="unit 'furlong'") as error:
        open_image(n5_xyz, "g/raw")
    assert "c.n5" in str(error.value) and "g/raw" in str(error.value)


PART = (slice(1, 3), slice(2, 5), slice(3, 7))  # inside the 4 x 6 x 8 multichannel volume


def write_multichannel(root, labels=("DAPI", "GFP", "RFP"), group_path=""):
    """An NGFF 0.4 image as acquisition software writes it: axes t, c, z, y, x (one time
    point, a channel per label), two levels, ``omero.channels`` labels; channel k holds
    ``k * 1000 + index``."""
    zyx = np.arange(4 * 6 * 8, dtype=np.uint16).reshape(4, 6, 8)
    data = np.stack([k * 1000 + zyx for k in range(len(labels))])[None]
    group = zarr.open_group(root, mode="a", zarr_format=2)
    image = group.require_group(group_path) if group_path else group
    image.create_array("0", data=data, chunks=(1, 1, 2, 3, 4))
    image.create_array("1", data=data[..., ::2, ::2, ::2], chunks=(1, 1, 2, 3, 4))
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"
    ]
    datasets = [
        {"path": str(k), "coordinateTransformations": [{"type": "scale",
                                                        "scale": [1, 1] + [2.0**k] * 3}]}
        for k in range(2)
    ]  # fmt: skip
    image.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    image.attrs["omero"] = {"channels": [{"label": label} for label in labels]}
    return data[0]


def test_a_channel_of_a_multichannel_ome_zarr_is_chosen_by_index_or_label(tmp_path):
    root = tmp_path / "round.ome.zarr"
    channels = write_multichannel(root)
    for channel in (1, "GFP"):
        image = open_image(root, "0", channel=channel)
        assert (image.shape, image.lead, image.spacing) == ((4, 6, 8), (0, 1), (1.0, 1.0, 1.0))
        np.testing.assert_array_equal(image.read(PART), channels[1][PART])
        np.testing.assert_array_equal(image.to_dask().compute(), channels[1])
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(image)).read(PART),
                                      channels[1][PART])  # fmt: skip
    coarse = open_image(root, "1", channel="RFP")
    np.testing.assert_array_equal(_everything(coarse), channels[2][::2, ::2, ::2])
    with pytest.raises(ImageError, match=r"hold 3 channels; set `channel` to an index 0-2 or a "
                                         r"label of \['DAPI', 'GFP', 'RFP'\]"):  # fmt: skip
        open_image(root, "0")
    for wrong in ("CY5", 3):
        with pytest.raises(ImageError, match=f"`channel` {wrong!r} is not one of the 3"):
            open_image(root, "0", channel=wrong)


def test_a_channel_is_refused_where_there_is_no_channel_axis(tmp_path, volume):
    write_zarr(volume, tmp_path / "plain.zarr", spacing=(1.0, 1.0, 1.0))
    write_n5(volume, tmp_path / "image.n5", "s0", (1.0, 1.0, 1.0))
    write_ome_zarr(tmp_path / "single.ome.zarr", volume, (1.0, 1.0, 1.0))
    for path, dataset in (("plain.zarr", None), ("image.n5", "s0"), ("single.ome.zarr", "0")):
        with pytest.raises(ImageError, match="`channel` 1 given, but"):
            open_image(tmp_path / path, dataset, channel=1)


def test_the_bioformats2raw_layout_is_found_by_itself(tmp_path):
    """bioformats2raw writes the image as the group ``0`` under a root that says so."""
    root = tmp_path / "converted.ome.zarr"
    channels = write_multichannel(root, group_path="0")
    zarr.open_group(root, mode="a").attrs["bioformats2raw.layout"] = 3
    for dataset, level in ((None, "0/0"), ("0", "0/0"), ("1", "0/1"), ("0/1", "0/1")):
        image = open_image(root, dataset, channel="DAPI")
        assert image.dataset == level, dataset
    np.testing.assert_array_equal(_everything(open_image(root, "1", channel=0)),
                                  channels[0][::2, ::2, ::2])  # fmt: skip


def test_plain_zarr_without_spacing_asks_for_it_in_the_config(tmp_path, volume):
    write_zarr(volume, tmp_path / "a.zarr", "raw")
    with pytest.raises(ImageError, match=r"set `spacing` \(z y x, µm\) in the config") as error:
        open_image(tmp_path / "a.zarr", "raw")
    assert "a.zarr" in str(error.value) and "'raw'" in str(error.value)


@pytest.mark.parametrize("bad", [(1, 2), (1, 0, 2), (1, -1, 2), (1, float("nan"), 2), "abc"])
def test_bad_spacing_is_refused(tmp_path, volume, bad):
    write_zarr(volume, tmp_path / "a.zarr")
    with pytest.raises(ImageError, match="expected 3 positive numbers"):
        open_image(tmp_path / "a.zarr", spacing=bad)


@pytest.mark.parametrize("version, shard", [("0.4", None), ("0.5", None), ("0.5", (64, 64, 64))])
def test_a_multichannel_pyramid_made_region_by_region_is_valid_ome_zarr(tmp_path, version, shard):
    """Two channels (c, z, y, x; the second twice the first), level 0 filled by two writers of
    half the image each, every other level by regions: valid NGFF (ome-zarr-models), read by
    ome-zarr-py (napari's reader) with the channel labels, and each level the mean of the one
    below, channel by channel."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr_models.v05 import Image as OmeImageV05

    rng = np.random.default_rng(5)
    first = rng.integers(1, 1000, (70, 96, 128)).astype(np.uint16)
    path = tmp_path / f"aligned_{version}.ome.zarr"
    group = create_ome_zarr(path, first.shape, np.uint16, (32, 32, 32), channels=2,
                            version=version, shard=shard)  # fmt: skip
    assert group["0"].shape == (2, 70, 96, 128) and group["0"].chunks == (1, 32, 32, 32)
    for half in (slice(0, 64), slice(64, 70)):  # regions of whole shards / chunks
        group["0"][:, half] = np.stack([first[half], 2 * first[half]])
    for level, shape in enumerate(pyramid_shapes(first.shape)[1:], start=1):
        downsample_level(
            path, level, ((0, shape[0]), (0, shape[1]), (0, 64 if shape[2] > 64 else shape[2]))
        )
        if shape[2] > 64:
            downsample_level(path, level, ((0, shape[0]), (0, shape[1]), (64, shape[2])))
    image = finish_ome_zarr(path, (2.0, 0.5, 0.5), (1.0, 0.0, 0.0), labels=["488", "561"],
                            attrs={"bigstream": {"run": 1}})  # fmt: skip

    group = zarr.open_group(path, mode="r")
    model = (OmeImageV04 if version == "0.4" else OmeImageV05).from_zarr(group)
    ome = model.attributes if version == "0.4" else model.attributes.ome
    multiscale = ome.multiscales[0]
    assert [axis.name for axis in multiscale.axes] == ["c", "z", "y", "x"]
    assert [d.path for d in multiscale.datasets] == ["0", "1", "2"]  # 128 -> 64 -> 32
    assert (group["0"].metadata.zarr_format == 2) == (version == "0.4")
    if shard:
        assert group["0"].shards == (1, 64, 64, 64)
    omero = dict(group.attrs)["omero" if version == "0.4" else "ome"]
    omero = omero if version == "0.4" else omero["omero"]
    assert [c["label"] for c in omero["channels"]] == ["488", "561"]
    windows = [c["window"] for c in omero["channels"]]
    assert windows[0]["max"] == 65535 and 0 < windows[0]["start"] < windows[0]["end"] <= 1000
    assert windows[1]["end"] == pytest.approx(2 * windows[0]["end"], rel=0.05)
    assert image.spacing == (2.0, 0.5, 0.5) and image.read((slice(0, 2),) * 3).tolist() == (
        first[:2, :2, :2].tolist()
    )
    second = open_image(path, "1", channel="561").read((slice(None),) * 3).astype(int)
    mean = first.reshape(35, 2, 48, 2, 64, 2).mean(axis=(1, 3, 5))
    np.testing.assert_array_equal(second, np.round(2 * mean).astype(int))

    nodes = list(Reader(parse_url(str(path)))())
    assert nodes[0].metadata["channel_names"] == ["488", "561"]
    assert nodes[0].metadata["contrast_limits"][1][1] == windows[1]["end"]
    assert [tuple(level.shape) for level in nodes[0].data] == [
        (2, 70, 96, 128), (2, 35, 48, 64), (2, 18, 24, 32)
    ]  # fmt: skip
    np.testing.assert_array_equal(np.asarray(nodes[0].data[0][1, :4, :4, :4]),
                                  2 * first[:4, :4, :4])  # fmt: skip


def test_an_unknown_ome_zarr_version_or_shards_on_0_4_are_refused(tmp_path):
    with pytest.raises(ImageError, match=r"version '0.6'; expected one of 0.4, 0.5"):
        create_ome_zarr(tmp_path / "a.ome.zarr", (4, 4, 4), np.uint8, version="0.6")
    with pytest.raises(ImageError, match="shards need OME-Zarr 0.5"):
        create_ome_zarr(tmp_path / "b.ome.zarr", (4, 4, 4), np.uint8, shard=(4, 4, 4))
