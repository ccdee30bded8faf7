"""Exporting a run's whole transform for other tools (``bigstream_workflow.export_transform``):
the ITK field through SimpleITK against our own point map and resampling, the refusal of
fields too large for SimpleITK, and the OME-Zarr 0.6 (RFC-5) scene read back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from bigstream_core.affine_field import field_from_grid, write_field
from bigstream_core.displacement import create_store, write_region
from bigstream_core.io import array_image
from bigstream_core.resample import resample_region, voxel_centres
from bigstream_core.tiling import Tile
from bigstream_core.transform_grid import covering_grid, voxel_grid
from bigstream_core.transforms import write_affine
from bigstream_workflow import export_transform
from bigstream_workflow.export_transform import ExportError, export, main, run_files
from bigstream_workflow.transform_files import load_transform

SHAPE, SPACING, ORIGIN = (24, 40, 44), (1.0, 0.8, 0.75), (2.0, -1.0, 0.5)
"""The fixed high-res image: voxels z, y, x; µm (an origin off 0 and unequal spacings, so a
swapped axis or a lost origin shows)."""
LOW_SPACING = tuple(2 * s for s in SPACING)
LOW_ORIGIN = tuple(o + s / 2 for o, s in zip(ORIGIN, SPACING, strict=True))
FIELD_SPACING = LOW_SPACING
"""The deformation's grid: every 2nd high-res voxel from voxel 0, as the deform stage stores
it on its finest level's grid."""
REGION = tuple(slice(0, n) for n in SHAPE)
"""The whole fixed image, as a region of voxels."""


def global_affine() -> np.ndarray:
    """A rotation about z of 4°, scaled by 1.03 and shifted (µm, z y x)."""
    angle = np.deg2rad(4)
    matrix = np.eye(4)
    matrix[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix[:3, :3] *= 1.03
    matrix[:3, 3] = [1.5, -2.0, 3.0]
    return matrix


def field_values(shape) -> np.ndarray:
    """A smooth displacement of up to about 1.5 µm on the field's grid (float32, z y x)."""
    axes = [o + s * np.arange(n) for o, s, n in zip(ORIGIN, FIELD_SPACING, shape, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return np.stack(
        [1.2 * np.sin(y / 6), 0.9 * np.cos(x / 7 + z / 9), 1.1 * np.sin(z / 5) * np.cos(y / 8)],
        axis=-1,
    ).astype(np.float32)


def write_run(out: Path, local: bool = True, deform: bool = True) -> Path:
    """The files of a finished run whose transform is known exactly: the global affine, 2 x 2
    x 2 local affines blended across 6 low-res voxels (``local``), a smooth deformation on
    every 2nd voxel (``deform``), and the plan's record of the fixed image."""
    for folder in ("global", "local", "transform", "plan"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    write_affine(out / "global" / "affine.txt", global_affine())
    low_shape = tuple(n // 2 for n in SHAPE)
    if local:
        rng = np.random.default_rng(0)
        affines = np.tile(np.eye(4), (2, 2, 2, 1, 1))
        affines[..., :3, :3] += rng.normal(0, 0.01, (2, 2, 2, 3, 3))
        affines[..., :3, 3] = rng.normal(0, 0.6, (2, 2, 2, 3))
        blocksize = tuple(n // 2 for n in low_shape)
        field = field_from_grid(affines, blocksize, (3, 3, 3), LOW_SPACING, LOW_ORIGIN)
        write_field(out / "local" / "field.json", field)
    if deform:
        shape = tuple((n - 1) // 2 + 1 for n in SHAPE)
        store = out / "transform" / "field.zarr"
        array = create_store(store, shape, FIELD_SPACING, ORIGIN, shape)
        whole = tuple((0, n) for n in shape)
        write_region(array, Tile(index=(0, 0, 0), core=whole, halo=whole), field_values(shape))
        array.attrs["complete"] = True
        (out / "transform" / "field.json").write_text(json.dumps({"store": str(store)}))
    levels = {
        "highres": {"shape": list(SHAPE), "spacing_um": list(SPACING), "origin_um": list(ORIGIN)},
        "lowres": {"shape": list(low_shape), "spacing_um": list(LOW_SPACING),
                   "origin_um": list(LOW_ORIGIN)},
    }  # fmt: skip
    (out / "plan" / "images.json").write_text(json.dumps({"images": {"fixed": levels}}))
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("run"))


def fixed_points(count: int, seed: int = 1) -> np.ndarray:
    """Random points (µm, z y x) within the fixed image's voxel centres."""
    extent = (np.asarray(SHAPE) - 1) * np.asarray(SPACING)
    return np.asarray(ORIGIN) + np.random.default_rng(seed).random((count, 3)) * extent


def itk_point_map(sitk, path: Path):
    """Our kind of point map (N, 3) µm z y x through ITK's transform of an exported field."""
    image = sitk.ReadImage(str(path))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(image, sitk.sitkVectorFloat64))
    return lambda points: np.array([transform.TransformPoint(p[::-1].tolist())[::-1]
                                    for p in points])  # fmt: skip


def voxel_error(transform, reference, points) -> np.ndarray:
    """|transform - reference| per point, in fixed voxels (the largest over the axes)."""
    return (np.abs(transform(points) - reference(points)) / np.asarray(SPACING)).max(axis=1)


@pytest.mark.parametrize("name", ["field.nrrd", "field.nii.gz", "field.mha"])
def test_itk_field_maps_points_where_our_transform_does(run, tmp_path, name):
    """ITK's DisplacementFieldTransform of the exported field, at random fixed points, lands
    within 0.1 voxel of our own point map: the whole chain G(L(x + d(x))), every format."""
    sitk = pytest.importorskip("SimpleITK")
    export(str(run), str(tmp_path / name))
    ours, _ = load_transform(run_files(str(run)))
    image = sitk.ReadImage(str(tmp_path / name))
    assert image.GetNumberOfComponentsPerPixel() == 3
    assert image.GetSpacing() == pytest.approx(FIELD_SPACING[::-1])  # x, y, z
    assert image.GetOrigin() == pytest.approx(ORIGIN[::-1])
    assert image.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    error = voxel_error(itk_point_map(sitk, tmp_path / name), ours, fixed_points(2000))
    print(f"{name}: ITK vs ours, voxels: mean {error.mean():.4f}, max {error.max():.4f}")
    assert error.max() < 0.1


def test_itk_field_is_exact_for_the_affine_and_the_deformation(tmp_path):
    """Without the local affines, ``G(x + d(x)) - x`` is trilinear between the field's nodes,
    which the default grid shares: ITK's interpolation gives our transform back to float32
    rounding."""
    sitk = pytest.importorskip("SimpleITK")
    out = write_run(tmp_path / "run", local=False)
    export(str(out), str(tmp_path / "field.nrrd"))
    ours, description = load_transform(run_files(str(out)))
    assert description == "global affine + deformation"
    error = voxel_error(itk_point_map(sitk, tmp_path / "field.nrrd"), ours, fixed_points(2000))
    assert error.max() < 1e-4


def textured_moving(transform) -> tuple[np.ndarray, tuple, tuple]:
    """A smooth textured moving image (float32; waves of 7-12 µm) covering where the fixed
    image maps, with its own spacing and origin: (data, spacing, origin)."""
    spacing = (0.9, 0.7, 0.8)
    mapped = transform(voxel_centres(REGION, SPACING, ORIGIN))
    origin = mapped.min(axis=0) - 3 * np.asarray(spacing)
    shape = np.ceil((mapped.max(axis=0) + 3 * np.asarray(spacing) - origin) / spacing).astype(int)
    axes = [o + s * np.arange(n) for o, s, n in zip(origin, spacing, shape, strict=True)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    data = 100 + 40 * np.sin(z / 1.6 + y / 2.3) + 30 * np.cos(x / 1.9 - y / 3.1) * np.sin(z / 2.4)
    return data.astype(np.float32), spacing, tuple(float(o) for o in origin)


def test_simpleitk_resampling_through_the_field_matches_ours(run, tmp_path):
    """``sitk.Resample(moving, fixed grid, field)`` (linear) matches our ``resample_region`` of
    the same image under the same transform. Both interpolate the image linearly once, so
    they differ only where ITK's interpolated field puts a voxel: at most 0.07 voxel here
    (0.07 µm), times the texture's steepest slope (~50 a µm) is ~3.5 of its range of ~140
    (2.5 %) at worst, and a tenth of that on average; hence the bounds below."""
    sitk = pytest.importorskip("SimpleITK")
    export(str(run), str(tmp_path / "field.nrrd"))
    ours, _ = load_transform(run_files(str(run)))
    data, spacing, origin = textured_moving(ours)
    expected = resample_region(array_image(data, spacing, origin), ours, REGION, SPACING, ORIGIN)
    moving = sitk.GetImageFromArray(data)
    moving.SetSpacing(spacing[::-1])
    moving.SetOrigin(origin[::-1])
    field = sitk.ReadImage(str(tmp_path / "field.nrrd"))
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    result = sitk.Resample(
        moving, SHAPE[::-1], transform, sitk.sitkLinear, ORIGIN[::-1], SPACING[::-1],
        (1, 0, 0, 0, 1, 0, 0, 0, 1), 0.0, sitk.sitkFloat32,
    )  # fmt: skip
    difference = np.abs(sitk.GetArrayFromImage(result) - expected)
    value_range = float(data.max() - data.min())
    print(f"|SimpleITK - ours| / range: mean {difference.mean() / value_range:.5f}, "
          f"max {difference.max() / value_range:.5f}")  # fmt: skip
    assert difference.mean() < 0.002 * value_range
    assert difference.max() < 0.03 * value_range


def test_an_itk_field_too_large_for_simpleitk_is_refused_with_the_step_that_fits(
    run, tmp_path, monkeypatch
):
    monkeypatch.setattr(export_transform, "ITK_LIMIT_NODES", 2000)
    with pytest.raises(ExportError) as refused:
        export(str(run), str(tmp_path / "field.nrrd"), step=1)
    message = str(refused.value)
    assert "24 x 40 x 44 = 42,240 nodes" in message and "more than the 2,000" in message
    step = int(message.split("--step ")[1].split()[0])
    assert voxel_grid(SHAPE, SPACING, ORIGIN, step).nodes <= 2000
    assert voxel_grid(SHAPE, SPACING, ORIGIN, step - 1).nodes > 2000
    assert not (tmp_path / "field.nrrd").exists()


def test_without_simpleitk_the_itk_export_says_how_to_install_it(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import SimpleITK -> ImportError
    with pytest.raises(ExportError, match=r"pip install 'SimpleITK>=2\.3,<3'"):
        export(str(run), str(tmp_path / "field.mha"))


def read_ngff_field(path: Path):
    """The displacements transformation of an exported OME-Zarr 0.6 scene, read as the spec
    says: (transformation, node positions (Z, Y, X, 3) µm, displacements (Z, Y, X, 3) µm)."""
    root = zarr.open_group(path, mode="r")
    assert root.metadata.zarr_format == 3
    scene = root.attrs["ome"]["scene"]
    (transformation,) = scene["coordinateTransformations"]
    field = zarr.open_group(path / transformation["path"], mode="r")
    (multiscale,) = field.attrs["ome"]["multiscales"]
    axes = multiscale["coordinateSystems"][0]["axes"]
    assert [(a["name"], a["type"]) for a in axes] == [
        ("c", "displacement"), ("z", "space"), ("y", "space"), ("x", "space")]  # fmt: skip
    (dataset,) = multiscale["datasets"]
    (to_space,) = dataset["coordinateTransformations"]
    scale, translation = (step[step["type"]] for step in to_space["transformations"])
    array = field[dataset["path"]]
    assert array.metadata.dimension_names == ("c", "z", "y", "x")
    region = tuple(slice(0, n) for n in array.shape[1:])
    nodes = voxel_centres(region, scale[1:], translation[1:]).reshape(*array.shape[1:], 3)
    return transformation, nodes, np.moveaxis(array[...], 0, -1)


def test_ngff_scene_holds_the_same_displacements(run, tmp_path):
    """The OME-Zarr 0.6 scene read back as the spec says: a ``displacements`` transformation
    from ``fixed`` to ``moving`` whose field, at its nodes, is our ``T(x) - x``, on the same
    grid as the ITK export (which uses the same sampling)."""
    target = tmp_path / "transform.zarr"
    print(export(str(run), str(target)))
    transformation, nodes, displacement = read_ngff_field(target)
    assert transformation["type"] == "displacements"
    assert (transformation["input"], transformation["output"]) == (
        {"name": "fixed"}, {"name": "moving"})  # fmt: skip
    assert transformation["interpolation"] == "linear"
    ours, description = load_transform(run_files(str(run)))
    expected = ours(nodes.reshape(-1, 3)) - nodes.reshape(-1, 3)
    np.testing.assert_allclose(displacement.reshape(-1, 3), expected, atol=1e-5)
    assert nodes[0, 0, 0] == pytest.approx(ORIGIN)
    assert nodes[1, 1, 1] - nodes[0, 0, 0] == pytest.approx(FIELD_SPACING)
    assert zarr.open_group(target, mode="r").attrs["bigstream"]["transform"] == description
    export(str(run), str(target), step=3)  # an earlier export is replaced
    assert read_ngff_field(target)[1].shape[:3] == voxel_grid(SHAPE, SPACING, ORIGIN, 3).shape


def test_default_grid_without_a_deformation_is_the_low_res_grid(tmp_path):
    out = write_run(tmp_path / "run", deform=False)
    summary = export(str(out), str(tmp_path / "transform.zarr"))
    grid = covering_grid(SHAPE, SPACING, ORIGIN, LOW_SPACING, LOW_ORIGIN)
    assert grid.origin == pytest.approx(np.asarray(LOW_ORIGIN) - LOW_SPACING)  # covers voxel 0
    assert "global affine + local affines as D(x)" in summary
    assert read_ngff_field(tmp_path / "transform.zarr")[1].shape[:3] == grid.shape


def test_the_command_line_names_what_it_cannot_do(run, tmp_path, capsys):
    main([str(run), str(tmp_path / "t.zarr"), "--step", "4"])
    assert "7 x 11 x 12 nodes" in capsys.readouterr().out
    for args, reason in (
        ([str(run), str(tmp_path / "field.tif")], "name an ITK file"),
        ([str(run), str(tmp_path / "t.zarr"), "--format", "itk"], "name an ITK file"),
        ([str(tmp_path), str(tmp_path / "t.zarr")], "not a finished run's results"),
        ([str(run), str(tmp_path / "t.zarr"), "--step", "0"], "at least 1"),
    ):
        with pytest.raises(SystemExit) as stopped:
            main(args)
        assert stopped.value.code == 2 and reason in capsys.readouterr().err
    (tmp_path / "folder").mkdir()
    with pytest.raises(SystemExit):
        main([str(run), str(tmp_path / "folder"), "--format", "ngff"])
    assert "is not a Zarr group" in capsys.readouterr().err
