"""``python -m bigstream_workflow.export_transform``: a run's whole transform for other tools.

The fixed -> moving transform of a finished run, ``T(x) = G(L(x + d(x)))`` from its stage
files (:mod:`bigstream_workflow.transform_files`), sampled as the displacement
``D(x) = T(x) - x`` on a grid over the fixed high-res image
(:mod:`bigstream_core.transform_grid`), block by block, and written as

- an **ITK displacement field** (``.nrrd``, ``.nii``, ``.nii.gz``, ``.mha``: by the
  target's extension) through SimpleITK, an optional dependency (the ``export`` extra).
  ITK's conventions: physical points and vectors x, y, z (ours reversed), µm; the image
  origin is the position of node (0, 0, 0), its direction the identity. ITK's
  ``DisplacementFieldTransform`` maps a point ``p`` of the fixed (output) space to
  ``p + D(p)`` in the moving space, which is what ``sitk.Resample(moving, fixed, transform)``
  needs, as ANTs uses a warp. SimpleITK holds the whole field in memory, so a grid of more
  than :data:`ITK_LIMIT_NODES` nodes is refused, with the ``--step`` that fits.
- an **OME-Zarr 0.6 scene** (RFC-5 coordinate systems and transformations; any size,
  written chunk by chunk): see :func:`scene_metadata` and :func:`field_metadata`.

The default grid is the deformation field's own (nodes on the field's nodes: the export is
exact for ``G`` and ``d``), extended to cover the fixed image; without a deformation, the
fixed image's low-res grid (the affine stages' resolution: exact for ``G``, and ``L``
blends neighbouring tiles over many low-res voxels). ``--step N`` takes every N-th
high-res voxel instead.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from bigstream_core.atomic import atomic_directory, atomic_path
from bigstream_core.displacement import open_field
from bigstream_core.tiling import tile_grid
from bigstream_core.transform_grid import (
    BLOCK_NODES,
    Grid,
    PointMap,
    covering_grid,
    displacement_block,
    fitting_step,
    voxel_grid,
)
from bigstream_workflow.transform_files import load_transform, stage_files

ITK_SUFFIXES = (".nrrd", ".nii.gz", ".nii", ".mha")
ITK_LIMIT_NODES = 2**27
"""Most nodes of an ITK export: SimpleITK holds the field whole, 12 bytes a node as written
(twice while writing: 3.2 GB at the limit), and a reader's ``DisplacementFieldTransform``
24 (float64)."""
RUN_FILES = ("global/affine.txt", "local/field.json", "transform/field.json")
"""A run's transform files (``output_dir``-relative) that the export reads when present."""
NGFF_VERSION = "0.6"
NGFF_FIELD = "coordinateTransformations/fixed_to_moving"
"""Where the scene's field lives: the spec's ``coordinateTransformations`` group."""
NGFF_CHUNKS = (64, 64, 64)
"""Nodes (z, y, x) per chunk of the OME-Zarr field, all 3 components in each chunk; the
blocks of :data:`~bigstream_core.transform_grid.BLOCK_NODES` are whole chunks."""
CONVENTION = "x -> x + D(x): fixed -> moving, um; D(x) = T(x) - x with T(x) = G(L(x + d(x)))"


class ExportError(Exception):
    """A run or a target the export cannot use; the message says why."""


def run_files(output_dir: str) -> dict[str, str]:
    """The transform files of a finished run, by stage (as
    :func:`~bigstream_workflow.transform_files.stage_files` names them)."""
    found = [os.path.join(output_dir, name) for name in RUN_FILES]
    files = stage_files([path for path in found if os.path.exists(path)])
    if "global" not in files:
        raise ExportError(
            f"{found[0]} not found: {output_dir} is not a finished run's results (or it is a "
            "set of a rounds/sweep run that reads its stages from an earlier set's folder, "
            "which the export does not follow)"
        )
    return files


def fixed_levels(output_dir: str) -> dict[str, dict]:
    """The fixed image's levels as the run's plan recorded them (``plan/images.json``:
    ``shape``, ``spacing_um``, ``origin_um``, z, y, x)."""
    path = os.path.join(output_dir, "plan", "images.json")
    if not os.path.exists(path):
        raise ExportError(f"{path} not found: {output_dir} is not a finished run's results")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)["images"]["fixed"]


def export_grid(levels: dict[str, dict], files: dict[str, str], step: int | None) -> Grid:
    """The grid to sample over the fixed high-res image: every ``step``-th voxel, or by
    default the deformation field's grid, or without one the low-res level's grid."""
    high = levels["highres"]
    image = (high["shape"], high["spacing_um"], high["origin_um"])
    if step is not None:
        return voxel_grid(*image, step)
    if "deform" in files:
        with open(files["deform"], encoding="utf-8") as handle:
            field = open_field(json.load(handle)["store"])
        return covering_grid(*image, field.spacing, field.origin)
    low = levels["lowres"]
    return covering_grid(*image, low["spacing_um"], low["origin_um"])


def target_format(target: str, chosen: str | None) -> str:
    """``itk`` or ``ngff``: ``chosen`` (checked against the target's name) or by the name."""
    name = target.rstrip("/")
    itk = name.endswith(ITK_SUFFIXES)
    if itk and chosen in (None, "itk"):
        return "itk"
    if chosen == "ngff" or chosen is None and name.endswith(".zarr"):
        return "ngff"
    raise ExportError(
        f"{target}: name an ITK file ({', '.join(ITK_SUFFIXES)}) or an OME-Zarr (.zarr)"
    )


def check_itk_size(grid: Grid, high: dict) -> None:
    """Refuse a grid too large for SimpleITK, naming the ``--step`` that fits."""
    if grid.nodes <= ITK_LIMIT_NODES:
        return
    image = (high["shape"], high["spacing_um"], high["origin_um"])
    step = fitting_step(*image, ITK_LIMIT_NODES)
    fits = voxel_grid(*image, step)
    raise ExportError(
        f"the ITK field would have {' x '.join(map(str, grid.shape))} = {grid.nodes:,} nodes "
        f"(z, y, x), more than the {ITK_LIMIT_NODES:,} SimpleITK can take (it holds the whole "
        f"field in memory: {grid.nodes * 24 / 1e9:.1f} GB while writing, as much again as a "
        f"reader's float64 DisplacementFieldTransform); --step {step} fits "
        f"({' x '.join(map(str, fits.shape))} nodes), or --format ngff writes any size"
    )


def simpleitk():
    """The SimpleITK module, or an error that says how to install it."""
    try:
        import SimpleITK
    except ImportError as error:
        raise ExportError(
            "the ITK export needs SimpleITK: pip install 'SimpleITK>=2.3,<3' "
            "(or the package with its extra: pip install 'bigstream-workflow[export]')"
        ) from error
    return SimpleITK


def write_itk(transform: PointMap, grid: Grid, target: str) -> None:
    """Write ``D`` on ``grid`` as an ITK displacement field (vector image, float32, x y z
    components in µm, spacing and origin x y z, identity direction), atomically."""
    sitk = simpleitk()
    vectors = np.empty((*grid.shape, 3), dtype=np.float32)
    for tile in tile_grid(grid.shape, BLOCK_NODES):
        box = tile.slices("core")
        vectors[box] = displacement_block(transform, grid, box)[..., ::-1]  # x, y, z
    image = sitk.GetImageFromArray(vectors, isVector=True)  # array z, y, x = image x, y, z
    del vectors
    image.SetSpacing(grid.spacing[::-1])
    image.SetOrigin(grid.origin[::-1])
    suffix = next(s for s in ITK_SUFFIXES if target.endswith(s))  # SimpleITK reads the name
    with atomic_path(target, suffix=suffix) as temporary:
        sitk.WriteImage(image, str(temporary), True)


def _space_axes() -> list[dict]:
    return [{"name": name, "type": "space", "unit": "micrometer"} for name in "zyx"]


def scene_metadata() -> dict:
    """The root group's ``ome`` attributes: an OME-Zarr 0.6 scene with coordinate systems
    ``fixed`` and ``moving`` (z, y, x, µm) and the ``displacements`` transformation from the
    first to the second (points: ``x -> x + D(x)``), its field at :data:`NGFF_FIELD`,
    interpolated linearly.

    As specified by OME-Zarr 0.6 (RFC-5 coordinate systems and transformations; release
    https://github.com/ome/ngff-spec/releases/tag/0.6, spec https://ngff.openmicroscopy.org;
    the field as a multiscale image since ngff-spec pull 145, as the spec's example
    ``examples/transformations/displacements/displacement_field.json`` writes it)."""
    return {
        "version": NGFF_VERSION,
        "scene": {
            "coordinateSystems": [
                {"name": name, "axes": _space_axes()} for name in ("fixed", "moving")
            ],
            "coordinateTransformations": [
                {
                    "type": "displacements",
                    "name": "fixed_to_moving",
                    "path": NGFF_FIELD,
                    "input": {"name": "fixed"},
                    "output": {"name": "moving"},
                    "interpolation": "linear",
                }
            ],
        },
    }


def field_metadata(grid: Grid) -> dict:
    """The field group's ``ome`` attributes: a one-level multiscale image, array ``0`` of
    shape (3, Z, Y, X): axis ``c`` of type ``displacement`` (component ``i`` displaces
    along the ``i``-th axis of ``moving``: z, y, x), then the input's z, y, x, mapped to
    coordinate system ``fixed`` (µm) by the grid's scale and translation."""
    axes = [{"name": "c", "type": "displacement", "discrete": True}, *_space_axes()]
    to_fixed = {
        "type": "sequence",
        "input": {"path": "0"},
        "output": {"name": "fixed"},
        "transformations": [
            {"type": "scale", "scale": [1.0, *grid.spacing]},
            {"type": "translation", "translation": [0.0, *grid.origin]},
        ],
    }
    return {
        "version": NGFF_VERSION,
        "multiscales": [
            {
                "name": "fixed_to_moving",
                "coordinateSystems": [{"name": "fixed", "axes": axes}],
                "datasets": [{"path": "0", "coordinateTransformations": [to_fixed]}],
            }
        ],
    }


def write_ngff(transform: PointMap, grid: Grid, target: str, record: dict) -> None:
    """Write ``D`` on ``grid`` as an OME-Zarr 0.6 scene (Zarr v3; ``record``: our own
    ``bigstream`` attributes), chunk by chunk, into a hidden folder renamed at the end. An
    earlier export at ``target`` is replaced; anything else there is refused."""
    import zarr

    if os.path.exists(target) and not os.path.exists(os.path.join(target, "zarr.json")):
        raise ExportError(f"{target} exists and is not a Zarr group: not replaced")
    with atomic_directory(target) as temporary:
        root = zarr.open_group(temporary, mode="w", zarr_format=3)
        root.attrs.update({"ome": scene_metadata(), "bigstream": record})
        folder, name = NGFF_FIELD.split("/")
        field = root.create_group(folder).create_group(name)
        field.attrs["ome"] = field_metadata(grid)
        array = field.create_array(
            "0", shape=(3, *grid.shape), chunks=(3, *NGFF_CHUNKS), dtype="float32",
            fill_value=0.0, dimension_names=("c", "z", "y", "x"),
        )  # fmt: skip
        for tile in tile_grid(grid.shape, BLOCK_NODES):
            box = tile.slices("core")
            displacement = displacement_block(transform, grid, box)
            array[(slice(None), *box)] = np.moveaxis(displacement, -1, 0)  # components first


def export(output_dir: str, target: str, step: int | None = None, fmt: str | None = None) -> str:
    """Export a finished run's transform to ``target`` (``fmt``: ``itk`` or ``ngff``, by
    default by the target's name); returns a one-line description of what was written."""
    if step is not None and step < 1:
        raise ExportError(f"--step {step}: a step is a whole number of voxels, at least 1")
    fmt = target_format(target, fmt)
    files = run_files(output_dir)
    levels = fixed_levels(output_dir)
    grid = export_grid(levels, files, step)
    if fmt == "itk":
        check_itk_size(grid, levels["highres"])
    transform, description = load_transform(files)
    if fmt == "itk":
        write_itk(transform, grid, target)
    else:
        record = {"convention": CONVENTION, "transform": description,
                  "run": os.path.abspath(output_dir)}  # fmt: skip
        write_ngff(transform, grid, target, record)
    return (
        f"{target}: {description} as D(x) = T(x) - x on {' x '.join(map(str, grid.shape))} "
        f"nodes (z, y, x) {list(grid.spacing)} um apart, the first at {list(grid.origin)} um"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bigstream_workflow.export_transform",
        description="Write a finished run's fixed -> moving transform as a displacement field "
        "for other tools: an ITK field (SimpleITK, ANTs) or an OME-Zarr 0.6 scene.",
    )
    parser.add_argument("output_dir", help="the run's results folder (its output_dir)")
    parser.add_argument(
        "target", help=f"the file to write: {', '.join(ITK_SUFFIXES)} (ITK) or .zarr (OME-Zarr)"
    )
    parser.add_argument(
        "--step", type=int, help="sample every STEP-th high-res voxel (default: the "
        "deformation field's grid; without a deformation, the low-res grid)",
    )  # fmt: skip
    parser.add_argument("--format", choices=("itk", "ngff"), help="default: by the target's name")
    args = parser.parse_args(argv)
    try:
        print(export(args.output_dir, args.target, args.step, args.format))
    except ExportError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    main()
