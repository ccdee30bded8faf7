"""The tutorial-style Python API: whole steps on arrays, for notebooks.

The names and parameters follow the bigstream tutorial. Images may be numpy
arrays (with their spacing) or :class:`bigstream_core.io.Image` handles opened
with :func:`bigstream_core.io.open_image`. Axis order z, y, x; spacing in µm;
the affine maps fixed points to moving points (``aligned(x) = moving(A x)``).

Example::

    from bigstream_core.api import ransac_affine, apply_global_affine
    affine = ransac_affine(fix, mov, fix_spacing, mov_spacing,
                           min_radius=6, max_radius=20, match_threshold=0.75)
    affine = affine_refine(fix, mov, fix_spacing, mov_spacing, affine)  # optional
    aligned = apply_global_affine(fix, mov, fix_spacing, mov_spacing, affine)
    local = tiled_ransac_affine(fix, mov, fix_spacing, mov_spacing, 6, 20, 0.75,
                                blocksize=(64, 128, 128), global_affine=affine)
    aligned = apply_local_affines(fix, mov, fix_spacing, mov_spacing, local, (64, 128, 128),
                                  global_affine=affine, write_path="aligned.ome.zarr")
    field = tiled_deformable_align(fix_hr, mov_hr, hr_spacing, hr_spacing, (128, 128, 128),
                                   global_affine=affine, local_affines=local,
                                   local_blocksize=(64, 128, 128), local_level_factor=2)
    aligned = apply_position_field(fix_hr, mov_hr, hr_spacing, hr_spacing, field, (128,) * 3,
                                   global_affine=affine, local_affines=local,
                                   local_blocksize=(64, 128, 128), local_level_factor=2,
                                   write_path="aligned.ome.zarr")
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd

from bigstream_core.affine_field import LocalAffineField, field_from_grid, invert_local_field
from bigstream_core.deform import DeformParams, register_tile
from bigstream_core.displacement import (
    INVERSE_CONVENTION,
    DisplacementField,
    create_store,
    invert_region,
    open_field,
    stitch_region,
)
from bigstream_core.global_affine import (
    fit_global_affine,
    image_keypoints,
    match_images,
    strongest,
)
from bigstream_core.intensity_refine import RefineParams, refine_by_intensity
from bigstream_core.io import Image, array_image, write_ome_zarr
from bigstream_core.local_affine import fit_tile, prove_filled, settle_tiles
from bigstream_core.masks import check_mask
from bigstream_core.resample import resample
from bigstream_core.tiling import block_chunks, neighbours, overlap_voxels, tile_grid
from bigstream_core.transforms import affine_map, chain


def as_image(data, spacing, origin=(0.0, 0.0, 0.0)) -> Image:
    """``data`` as an :class:`Image`: an Image is returned as is, an array is wrapped."""
    if isinstance(data, Image):
        return data
    return array_image(np.asarray(data), spacing, origin)


def ransac_affine(
    fix,
    mov,
    fix_spacing,
    mov_spacing,
    min_radius: float,
    max_radius: float,
    match_threshold: float,
    *,
    cc_radius: int = 12,
    nspots: int = 5000,
    align_threshold: float = 2.0,
    num_sigma_max: int = 10,
    blocksize="auto",
    seed: int = 0,
    return_report: bool = False,
):
    """Global affine (4x4, fixed -> moving, µm, z y x) from blob key points.

    ``fix``/``mov``: 3D arrays (z, y, x) or Images; ``*_spacing``: z, y, x µm
    (ignored for Images, which carry their own). Radii and ``cc_radius`` in
    voxels; ``align_threshold`` in µm. With ``return_report=True`` returns
    ``(affine, report)`` with the point, match and inlier counts and timings.
    Key points are found in tiles of ``blocksize`` voxels (``"auto"``: sized from the
    image and the radii, at most 48 M voxels read per tile), one thread per core;
    memory grows with the tile, not the image.
    Raises :class:`bigstream_core.global_affine.GlobalAffineError` with the
    counts when too few points or matches are found, or the fit is degenerate.

    Example: ``ransac_affine(fix, mov, (1.68, 1.84, 1.84), (1.68, 1.84, 1.84),
    min_radius=6, max_radius=20, match_threshold=0.75)``.
    """
    if nspots < 1:
        raise ValueError(f"nspots = {nspots}: expected at least 1 key point per image")
    fixed, moving = as_image(fix, fix_spacing), as_image(mov, mov_spacing)
    points = [
        strongest(
            [image_keypoints(image, min_radius, max_radius, num_sigma_max, cc_radius, blocksize)],
            nspots,
        )
        for image in (fixed, moving)
    ]
    matches, report = match_images(
        fixed, points[0], moving, points[1], cc_radius, match_threshold, align_threshold, seed
    )
    affine, fit = fit_global_affine(matches, align_threshold, seed)
    report.update(fit)
    return (affine, report) if return_report else affine


def affine_refine(
    fix,
    mov,
    fix_spacing,
    mov_spacing,
    initial_affine,
    *,
    fix_mask=None,
    mov_mask=None,
    seed: int = 0,
    return_report: bool = False,
    **settings,
):
    """``initial_affine`` (4x4, fixed -> moving, µm, z y x; e.g. from :func:`ransac_affine`)
    refined by maximising the normalised cross-correlation of the images under it.

    ``fix``/``mov``: 3D arrays (z, y, x) or Images (read by windows around the samples);
    ``*_spacing``: z, y, x µm (ignored for Images). ``fix_mask``/``mov_mask``: optional
    arrays of each image's shape (nonzero = foreground): the metric uses fixed voxels inside
    the fixed mask that map inside the moving mask. ``settings``: the fields of
    :class:`bigstream_core.intensity_refine.RefineParams`, defaults as there: ``metric``
    (``"lncc"``: the NCC of cubes of ``region_voxels``, averaged, robust to gain, gamma and
    illumination changes between rounds; ``"ncc"``: one global NCC), ``fit_gain`` (fit a
    smooth illumination gain of the moving image with the affine), the pyramid
    ``shrink_factors`` with ``level_sigmas`` (voxels of each level), at most ``iterations``
    L-BFGS-B iterations and ``samples`` fixed voxels per level. Returns the refined 4x4
    matrix, or the initial one when the metric does not improve; with
    ``return_report=True`` ``(affine, report)`` with the metric before/after, the
    iterations per level, the time and the status. Raises
    :class:`bigstream_core.masks.MaskError` for a mask of the wrong shape or an empty one.

    Example::

        affine = ransac_affine(fix, mov, sp, sp, min_radius=6, max_radius=20,
                               match_threshold=0.75)
        refined = affine_refine(fix, mov, sp, sp, affine, fix_mask=fix > 120)
    """
    fixed, moving = as_image(fix, fix_spacing), as_image(mov, mov_spacing)
    masks = [
        None if mask is None else check_mask(mask, image.shape, name)
        for mask, image, name in ((fix_mask, fixed, "fix_mask"), (mov_mask, moving, "mov_mask"))
    ]
    params = RefineParams.from_config(settings)
    affine, report = refine_by_intensity(fixed, moving, initial_affine, params, *masks, seed=seed)
    return (affine, report) if return_report else affine


def apply_global_affine(fix, mov, fix_spacing, mov_spacing, affine, order: int = 1) -> np.ndarray:
    """The moving image resampled into the fixed grid through ``affine`` (numpy, moving dtype).

    ``fix``/``mov``: 3D arrays (z, y, x) with ``*_spacing`` (z, y, x µm), or
    Images (spacing ``None``); ``affine``: 4x4, fixed -> moving, µm, z y x (as
    :func:`ransac_affine` returns it); ``order``: interpolation order.
    ``fix`` gives only the output grid (its shape, spacing and origin); voxels
    mapping outside the moving image are 0. Example:
    ``aligned = apply_global_affine(fix, mov, fix_spacing, mov_spacing, affine)``;
    ``apply_global_affine(fix, mov, None, None, np.eye(4))`` shows the pair unregistered.
    """
    fixed, moving = as_image(fix, fix_spacing), as_image(mov, mov_spacing)
    lazy = resample(moving, affine_map(affine), fixed.shape, fixed.spacing, fixed.origin, order)
    return lazy.compute()


def tiled_ransac_affine(
    fix,
    mov,
    fix_spacing,
    mov_spacing,
    min_radius: float,
    max_radius: float,
    match_threshold: float,
    blocksize,
    *,
    overlap: float = 0.125,
    global_affine=None,
    cc_radius: int = 12,
    nspots: int = 2000,
    align_threshold: float = 2.0,
    num_sigma_max: int = 10,
    search_radius: float = 8.0,
    min_matches: int = 20,
    outlier_tolerance: float = 5.0,
    seed: int = 0,
    return_report: bool = False,
    refine=None,
):
    """One affine per overlapping tile, on top of ``global_affine`` (4x4, default identity).

    Tiles are ``blocksize`` voxels (z, y, x) of ``fix`` with ``overlap`` (a
    fraction) added on each side. Returns an array (tiles_z, tiles_y, tiles_x,
    4, 4) of affines mapping fixed points into the moving image *under the
    global affine* (µm, z y x); tiles that fail or disagree with their
    neighbours by more than ``outlier_tolerance`` µm hold the average of their
    neighbours. Every tile's affine, fitted or filled, is kept only where it raises the
    tile's metric beyond noise, else the tile keeps the identity (the global affine
    alone). With ``return_report=True`` also a table, one row per tile.
    ``refine``: the ``local_affine.refine`` config block (fields of
    :class:`~bigstream_core.intensity_refine.RefineParams` and ``enabled``; None: its
    defaults, refinement off); it also sets the metric on which each tile proves its
    affine (:func:`~bigstream_core.local_affine.prove_tile`).

    Key points are detected once per image, as the workflow's global stage does, and each
    tile matches its ``nspots`` strongest of them.

    Example: ``tiled_ransac_affine(fix, mov, sp, sp, 6, 20, 0.75, (64, 128, 128),
    global_affine=affine)``.
    """
    fixed, moving = as_image(fix, fix_spacing), as_image(mov, mov_spacing)
    global_affine = np.eye(4) if global_affine is None else np.asarray(global_affine, float)
    params = {
        "nspots": nspots, "cc_radius": cc_radius, "match_threshold": match_threshold,
        "align_threshold": align_threshold, "search_radius": search_radius,
        "min_matches": min_matches, "refine": dict(refine or {}),
    }  # fmt: skip
    keypoints = tuple(
        image_keypoints(image, min_radius, max_radius, num_sigma_max, cc_radius)
        for image in (fixed, moving)
    )
    tiles = tile_grid(fixed.shape, blocksize, overlap_voxels(blocksize, overlap))
    results, rows = {}, []
    for tile in tiles:
        results[tile.id], row = fit_tile(
            fixed, moving, global_affine, tile, keypoints, params, seed
        )
        rows.append(row)

    def prove(tile, matrix):
        return prove_filled(fixed, moving, global_affine, tile, matrix, params["refine"], seed=seed)

    affines, report = settle_tiles(
        results, pd.DataFrame(rows), tiles, fixed, outlier_tolerance, prove
    )
    return (affines, report) if return_report else affines


def apply_local_affines(
    fix,
    mov,
    fix_spacing,
    mov_spacing,
    local_affines,
    blocksize,
    *,
    global_affine=None,
    overlap: float = 0.125,
    write_path=None,
    lazy: bool = False,
    order: int = 1,
    chunks=(64, 64, 64),
    fix_level_factor=1,
):
    """The moving image through ``G(L(x))``: global affine then blended local affines.

    ``local_affines`` and ``blocksize``/``overlap`` are what
    :func:`tiled_ransac_affine` used (``blocksize`` in voxels, z y x, of the
    level the tiles were fitted on; ``overlap`` a fraction); ``global_affine``:
    4x4, fixed -> moving, µm, z y x. The tile grid is physical, so ``fix`` may
    be a finer level than the one the tiles were fitted on when
    ``fix_level_factor`` (fitted-level voxel / ``fix`` voxel, per axis or one
    number) says so. Three output modes, as in the tutorial: an OME-Zarr
    written block by block when ``write_path`` is given (its Image is
    returned), a lazy dask array when ``lazy=True``, a numpy array otherwise;
    ``chunks`` (z, y, x voxels) are the blocks of the output.

    Example (tiles fitted on the low-res level, applied there and, lazily, on the
    high-res level twice as fine)::

        local = tiled_ransac_affine(fix, mov, None, None, 1.5, 5, 0.7, (20, 40, 40),
                                    global_affine=affine)
        aligned = apply_local_affines(fix, mov, None, None, local, (20, 40, 40),
                                      global_affine=affine)
        lazy = apply_local_affines(fix_hr, mov_hr, None, None, local, (20, 40, 40),
                                   global_affine=affine, fix_level_factor=2, lazy=True)
    """
    fixed, moving = as_image(fix, fix_spacing), as_image(mov, mov_spacing)
    transform = affine_stages(
        fixed, global_affine, local_affines, blocksize, overlap, fix_level_factor
    )
    aligned = resample(moving, transform, fixed.shape, fixed.spacing, fixed.origin, order, chunks)
    return _output(aligned, fixed, write_path, lazy, chunks)


def affine_stages(
    fixed: Image, global_affine=None, local_affines=None, local_blocksize=None,
    local_overlap: float = 0.125, level_factor=1,
):  # fmt: skip
    """The point map ``G(L(x))`` (µm, fixed -> moving) of the affine stages on ``fixed``'s grid.

    ``local_affines`` (a grid from :func:`tiled_ransac_affine`, fitted with
    ``local_blocksize``/``local_overlap`` on a level ``level_factor`` times
    coarser than ``fixed``) may be None; so may ``global_affine`` (identity).
    """
    global_affine = np.eye(4) if global_affine is None else np.asarray(global_affine, float)
    local = local_field(fixed, local_affines, local_blocksize, local_overlap, level_factor)
    if local is None:
        return affine_map(global_affine)
    return chain(affine_map(global_affine), local)


def local_field(
    fixed: Image, local_affines, local_blocksize, local_overlap: float = 0.125, level_factor=1
) -> LocalAffineField | None:
    """The blended local affine field of a tile grid (None without ``local_affines``)."""
    if local_affines is None:
        return None
    if local_blocksize is None:
        raise ValueError("local_affines given without the blocksize they were fitted with")
    factor = np.broadcast_to(np.asarray(level_factor, dtype=float), (3,))
    spacing = np.asarray(fixed.spacing) * factor
    origin = np.asarray(fixed.origin) + (factor - 1) / 2 * np.asarray(fixed.spacing)
    overlap_vox = overlap_voxels(local_blocksize, local_overlap)
    return field_from_grid(local_affines, local_blocksize, overlap_vox, spacing, origin)


def _output(aligned, fixed: Image, write_path, lazy: bool, chunks):
    """The tutorial's three output modes of a lazy aligned image."""
    if write_path is not None:
        return write_ome_zarr(write_path, aligned, fixed.spacing, fixed.origin, chunks)
    return aligned if lazy else aligned.compute()


def tiled_deformable_align(
    fix,
    mov,
    fix_spacing,
    mov_spacing,
    blocksize,
    *,
    global_affine=None,
    local_affines=None,
    write_path=None,
    deform_kwargs=None,
    overlap: float = 0.125,
    local_blocksize=None,
    local_overlap: float = 0.125,
    local_level_factor=1,
    return_report: bool = False,
):
    """Deformable registration block by block on top of the affine stages.

    ``fix`` is cut into blocks of ``blocksize`` voxels (z, y, x) with
    ``overlap`` (a fraction) on each side; each block runs the greedy local-NCC
    registration of :mod:`bigstream_core.deform` (``deform_kwargs``: fields of
    :class:`~bigstream_core.deform.DeformParams`, e.g. ``iterations``,
    ``shrink_factors``, ``smooth_sigmas``, ``cc_radius``, ``mask_threshold``)
    against the moving image pulled through ``G(L(x))`` (see
    :func:`affine_stages` for ``global_affine``/``local_affines``). The block
    fields (kept in a temporary folder, not in memory) are blended into one
    displacement field (Z, Y, X, 3), float32, µm, z y x, acting before the
    affines: ``T(x) = G(L(x + d(x)))``. With ``write_path`` it is written to
    that Zarr (region by region) and the Zarr array is returned, else a numpy
    array. ``return_report=True`` adds a table, one row per block.

    Example (local affines fitted on a level twice as coarse as ``fix_hr``)::

        field = tiled_deformable_align(
            fix_hr, mov_hr, None, None, (128, 128, 128), global_affine=affine,
            local_affines=local, local_blocksize=(64, 128, 128), local_level_factor=2,
            deform_kwargs={"mask_threshold": 150}, write_path="field.zarr")
    """
    fixed, moving = as_image(fix, fix_spacing), as_image(mov, mov_spacing)
    transform = affine_stages(
        fixed, global_affine, local_affines, local_blocksize, local_overlap, local_level_factor
    )
    params = DeformParams.from_config(dict(deform_kwargs or {}))
    overlap_vox = overlap_voxels(blocksize, overlap)
    tiles = tile_grid(fixed.shape, blocksize, overlap_vox, params.shrink_factors[-1])
    by_id = {tile.id: tile for tile in tiles}
    if write_path is not None:
        chunks = block_chunks(blocksize)
        output = create_store(write_path, fixed.shape, fixed.spacing, fixed.origin, chunks)
    else:
        output = np.zeros((*fixed.shape, 3), dtype=np.float32)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bigstream-deform-") as folder:
        files = {tile.id: os.path.join(folder, f"{tile.id}.npy") for tile in tiles}
        for tile in tiles:
            field, row = register_tile(fixed, moving, transform, tile, params)
            np.save(files[tile.id], field)
            rows.append(row)
        for tile in tiles:
            region = stitch_region(
                tile, neighbours(tile, by_id), fixed.shape, blocksize, overlap_vox,
                lambda block: np.load(files[block.id], mmap_mode="r"), params.shrink_factors[-1],
            )  # fmt: skip
            output[(*tile.slices("core"), slice(None))] = region
    if write_path is not None:
        output.attrs["complete"] = True
    report = pd.DataFrame(rows)
    return (output, report) if return_report else output


def apply_position_field(
    fix,
    mov,
    fix_spacing,
    mov_spacing,
    field,
    blocksize,
    *,
    global_affine=None,
    local_affines=None,
    write_path=None,
    lazy: bool = False,
    order: int = 1,
    local_blocksize=None,
    local_overlap: float = 0.125,
    local_level_factor=1,
):
    """The moving image through ``G(L(x + d(x)))``, one interpolation, block by block.

    ``field``: the displacement field of :func:`tiled_deformable_align` (numpy
    or Zarr array (Z, Y, X, 3) µm on ``fix``'s grid, or the path of its Zarr);
    ``global_affine``/``local_affines`` as in :func:`affine_stages`. Output
    blocks are ``blocksize`` voxels (z, y, x); the three output modes of
    :func:`apply_local_affines` (``write_path``, ``lazy``, numpy). Example::

        aligned = apply_position_field(
            fix_hr, mov_hr, None, None, "field.zarr", (128, 128, 128), global_affine=affine,
            local_affines=local, local_blocksize=(64, 128, 128), local_level_factor=2,
            write_path="aligned.ome.zarr")
    """
    fixed, moving = as_image(fix, fix_spacing), as_image(mov, mov_spacing)
    displacement = _displacement(field, fixed.spacing, fixed.origin)
    transform = chain(
        affine_stages(
            fixed, global_affine, local_affines, local_blocksize, local_overlap, local_level_factor
        ),
        displacement,
    )
    chunks = tuple(blocksize)
    aligned = resample(moving, transform, fixed.shape, fixed.spacing, fixed.origin, order, chunks)
    return _output(aligned, fixed, write_path, lazy, chunks)


def _displacement(field, spacing, origin) -> DisplacementField:
    """``field`` (Z, Y, X, 3) µm as a :class:`DisplacementField` on the fixed grid, or on its
    nodes every ``shrink``-th voxel (the workflow's ``transform/field.zarr``).

    A path is opened with the grid stored beside it; a Zarr array that records its grid
    (``spacing_um``, ``origin_um``, ``shrink``) must agree with ``spacing`` times its
    ``shrink`` and ``origin`` (z, y, x µm), or ValueError says both; any other array is
    placed on ``spacing``/``origin``."""
    if isinstance(field, (str, os.PathLike)):
        return open_field(field)
    attrs = getattr(field, "attrs", None)
    stored = attrs.asdict() if attrs is not None else {}
    shrink = stored.get("shrink", 1)
    spacing = [float(s) * shrink for s in spacing]
    for name, given, key in (("spacing", spacing, "spacing_um"), ("origin", origin, "origin_um")):
        if key in stored and not np.allclose(given, stored[key]):
            raise ValueError(
                f"the field array records its grid {name} as {stored[key]} (µm, z y x; nodes "
                f"every {shrink} voxels) but {list(given)} was given: pass the field's own "
                f"{name}, or its path"
            )
    return DisplacementField(field, spacing, origin, shrink)


def invert_displacement_field(
    field, fix_spacing, *, blocksize=(128, 128, 128), origin=(0.0, 0.0, 0.0), write_path=None
):
    """The inverse ``e`` of a displacement field ``d`` (Z, Y, X, 3) µm on a grid of
    ``fix_spacing`` µm (or its nodes, when ``field`` records a ``shrink``): ``y + e(y)``
    undoes ``x + d(x)``, computed on ``d``'s grid region by region (``blocksize`` nodes) by
    fixed-point iteration. A numpy array, or with ``write_path`` a Zarr written region by
    region (the Zarr array is returned)."""
    displacement = _displacement(field, fix_spacing, origin)
    shape = tuple(int(n) for n in displacement.shape)
    if write_path is not None:
        output = create_store(write_path, shape, displacement.spacing, displacement.origin,
                              blocksize, INVERSE_CONVENTION, displacement.shrink)  # fmt: skip
    else:
        output = np.zeros((*shape, 3), dtype=np.float32)
    for tile in tile_grid(shape, blocksize):
        region, _ = invert_region(displacement, tile)
        output[(*tile.slices("core"), slice(None))] = region
    if write_path is not None:
        output.attrs["complete"] = True
    return output


def transform_points(
    points,
    fix_spacing,
    *,
    global_affine=None,
    local_affines=None,
    field=None,
    inverse_field=None,
    to_moving: bool = True,
    origin=(0.0, 0.0, 0.0),
    local_blocksize=None,
    local_overlap: float = 0.125,
    local_level_factor=1,
):
    """Points (N, 3) µm z y x carried through the registration.

    ``to_moving=True``: fixed -> moving, ``G(L(x + d(x)))``; ``False``: moving ->
    fixed, ``x = y' + e(y')`` with ``y' = L^-1(G^-1(y))``, which needs
    ``inverse_field`` (:func:`invert_displacement_field`) when a ``field`` was
    used. Both fields live on the fixed grid (``fix_spacing``, ``origin``), or on
    its nodes every ``shrink``-th voxel when a stored field records one;
    ``local_*`` as in :func:`affine_stages`, the factor relative to the fixed grid.

    Example (cells found in the fixed image, (N, 3) µm z y x, into the moving image
    and back)::

        moved = transform_points(cells, fix_hr.spacing, affine, field=field)
        back = transform_points(moved, fix_hr.spacing, affine, field=field, to_moving=False,
                                inverse_field=invert_displacement_field(field, fix_hr.spacing))
    """
    grid = array_image(np.zeros((1, 1, 1), np.uint8), fix_spacing, origin)
    global_affine = np.eye(4) if global_affine is None else np.asarray(global_affine, float)
    local = local_field(grid, local_affines, local_blocksize, local_overlap, local_level_factor)
    points = np.asarray(points, dtype=float)
    if to_moving:
        maps = [affine_map(global_affine)] + ([] if local is None else [local])
        if field is not None:
            maps.append(_displacement(field, fix_spacing, origin))
        return chain(*maps)(points)
    if field is not None and inverse_field is None:
        raise ValueError("moving -> fixed through a deformation needs its inverse_field")
    result = affine_map(np.linalg.inv(global_affine))(points)
    if local is not None:
        result = invert_local_field(local, result)
    if inverse_field is not None:
        result = _displacement(inverse_field, fix_spacing, origin)(result)
    return result
