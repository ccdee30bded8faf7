"""Local affines: one affine per overlapping low-res tile, blended into one smooth field.

Each tile's affine ``L_t`` maps fixed points to where they lie in the moving
image *already under the global affine* ``G``, so the full transform is
``T(x) = G(L(x))`` (docs/design.md). A tile's fitted affine must prove itself: it is
kept only where it raises the tile's intensity metric beyond noise over the
identity (``G`` alone), else the identity is kept (:func:`prove_tile`). Tiles
that fail (too few points or matches, degenerate fit, no content) or disagree
with their neighbours get the average of their neighbours' affines, repeated
until every tile has one.

The settled grid of affines becomes the blended field of
``bigstream_core.affine_field`` (``L(x) = sum_t w_t(x) L_t(x)``, no seams).
Points and matrices are µm, z y x.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import ndimage

from bigstream_core.affine_fit import AffineFitError, check_affine, fit_affine_ransac, residuals
from bigstream_core.intensity_refine import (
    RefineError,
    RefineParams,
    compare_affines,
    refine_by_intensity,
)
from bigstream_core.io import Image, array_image
from bigstream_core.keypoints import COLUMNS
from bigstream_core.matching import match_near
from bigstream_core.neighbourhoods import extract
from bigstream_core.resample import resample_region, source_window
from bigstream_core.tiling import Tile
from bigstream_core.transforms import affine_map, apply_affine

# Enough to find a 25 %-inlier set with probability 0.9997; a tile that fails costs no more.
TILE_RANSAC_TRIALS = 2000
REPORT_COLUMNS = ["tile", "fixed_points", "moving_points", "matches", "inliers",
                  "residual_median_um", "status", "refine", "metric_global", "metric_local",
                  "decision"]  # fmt: skip
PROOF_SIGMAS = 2.0
"""A tile's affine replaces the global affine alone only where it raises the tile's metric
by more than this many standard errors of the per-cube gains (beyond noise)."""
SHRINK_SHARES = (1.0, 0.5)
"""The tile's affine, then the same moved halfway toward the identity, are tried in turn."""


def _region_image(data: np.ndarray, image: Image, region) -> Image:
    """A region of ``image`` held in memory, placed where it lies (µm)."""
    start = np.array([s.start for s in region])
    origin = np.asarray(image.origin) + start * np.asarray(image.spacing)
    return array_image(data, image.spacing, tuple(origin))


def fit_tile(
    fixed: Image,
    moving: Image,
    global_affine: np.ndarray,
    tile: Tile,
    keypoints: tuple[pd.DataFrame, pd.DataFrame],
    params: dict,
    seed: int = 0,
    masks: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
    min_foreground: float = 0.0,
) -> tuple[np.ndarray | None, dict]:
    """The affine of one low-res tile, or None with the reason in the report row.

    ``keypoints``: the global stage's key point tables (:data:`COLUMNS`) of the fixed
    image (µm, fixed space) and of the moving image (µm, moving space), at least those
    near the tile: no blob is detected again here. The moving points are carried into
    fixed space by the inverse of ``global_affine``; each image's ``nspots`` strongest
    inside the tile's halo, where both images have data far enough from the edge for a
    whole correlation neighbourhood, are matched. The fixed tile (its halo) is read, and
    only the region of the moving image that the global affine maps onto it. ``params``
    holds the ``local_affine`` config block (``align_threshold`` and ``search_radius``
    in µm, ``cc_radius`` in voxels, ``min_matches``, ``nspots``, ``refine``). ``masks``:
    the fixed and moving foreground on their images' grids (or None); a tile whose core
    has less than ``min_foreground`` (a fraction) of fixed foreground is skipped. With
    ``params["refine"]["enabled"]`` the RANSAC affine is refined by intensities
    (:mod:`bigstream_core.intensity_refine`) on the tile's core inside the masks, where it is
    judged, and kept unless the metric improves.
    """
    row = dict.fromkeys(REPORT_COLUMNS[1:6], 0) | {"tile": tile.id, "refine": "off"}
    row |= {"metric_global": float("nan"), "metric_local": float("nan"), "decision": ""}
    fixed_mask, moving_mask = masks
    if fixed_mask is not None:
        share = float(np.mean(fixed_mask[tile.slices("core")]))
        if share < min_foreground:
            need = f"need {100 * min_foreground:.0f} %"
            return None, row | {"status": f"failed: {100 * share:.0f} % foreground ({need})"}
    region = tile.slices("halo")
    fixed_tile = _region_image(fixed.read(region), fixed, region)
    warped, inside = resample_region(
        moving, affine_map(global_affine), region, fixed.spacing, fixed.origin, return_inside=True
    )
    moving_tile = _region_image(warped, fixed, region)
    # where both images have data, far enough from its edge for a whole neighbourhood
    usable = ndimage.minimum_filter(inside, size=2 * params["cc_radius"] + 1, mode="constant")
    fixed_table, moving_table = keypoints
    moving_in_fixed = apply_affine(
        np.linalg.inv(global_affine), moving_table[COLUMNS[:3]].to_numpy()
    )
    points = [
        _strongest_usable(position, table["response"], fixed_tile, usable, params["nspots"])
        for position, table in (
            (fixed_table[COLUMNS[:3]].to_numpy(), fixed_table),
            (moving_in_fixed, moving_table),
        )
    ]
    row["fixed_points"], row["moving_points"] = len(points[0]), len(points[1])
    need = params["min_matches"]
    if min(len(points[0]), len(points[1])) < need:
        return None, row | {"status": f"failed: too few key points (need {need})"}
    vectors = [
        extract(image, p, params["cc_radius"])
        for image, p in zip((fixed_tile, moving_tile), points, strict=True)
    ]
    pairs, _, _ = match_near(
        points[0], vectors[0], points[1], vectors[1], np.eye(4), params["search_radius"],
        params["match_threshold"],
    )  # fmt: skip
    row["matches"] = len(pairs)
    fixed_um, moving_um = points[0][pairs[:, 0]], points[1][pairs[:, 1]]
    try:
        matrix, inliers = fit_affine_ransac(
            fixed_um, moving_um, params["align_threshold"], seed, need, TILE_RANSAC_TRIALS
        )
        check_affine(matrix)
    except AffineFitError as error:
        return None, row | {"status": f"failed: {error}"}
    row["inliers"] = int(inliers.sum())
    row["residual_median_um"] = float(
        np.median(residuals(matrix, fixed_um[inliers], moving_um[inliers]))
    )
    core = _judged_voxels(tile, fixed_mask)  # refined and judged where the tile's affine rules
    refine = params.get("refine") or {}
    if refine.get("enabled"):
        moving_tile_mask = inside
        if moving_mask is not None:
            mask_image = array_image(moving_mask, moving.spacing, moving.origin)
            moving_tile_mask = inside & resample_region(
                mask_image, affine_map(global_affine), region, fixed.spacing, fixed.origin, order=0
            ).astype(bool)
        tile_masks = (core, moving_tile_mask)
        matrix, row["refine"] = _refined(fixed_tile, moving_tile, matrix, params, tile_masks, seed)
    matrix, proof = _proved(fixed_tile, moving, global_affine, tile, matrix, refine, masks, seed)
    return matrix, row | proof | {"status": "ok"}


def prove_filled(
    fixed: Image,
    moving: Image,
    global_affine: np.ndarray,
    tile: Tile,
    matrix: np.ndarray,
    refine: dict,
    masks: tuple[np.ndarray | None, np.ndarray | None] = (None, None),
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """:func:`prove_tile` for a tile whose affine ``matrix`` was filled from its neighbours
    (its fit failed or disagreed with them): the fill must prove itself like a fit. Reads
    the tile's halo and the moving window the global affine maps it onto; ``masks`` and the
    result as in :func:`fit_tile` and :func:`prove_tile`."""
    region = tile.slices("halo")
    fixed_tile = _region_image(fixed.read(region), fixed, region)
    return _proved(fixed_tile, moving, global_affine, tile, matrix, refine, masks, seed)


def _proved(fixed_tile, moving, global_affine, tile, matrix, refine, masks, seed):
    """:func:`prove_tile` on the tile's judged voxels and the moving window under ``G``."""
    window, slices = _moving_window(moving, global_affine, fixed_tile)
    fixed_mask, moving_mask = masks
    moving_judged = None if moving_mask is None else moving_mask[slices]
    judged = (_judged_voxels(tile, fixed_mask), moving_judged)
    return prove_tile(fixed_tile, window, global_affine, matrix, refine, judged, seed)


def _judged_voxels(tile: Tile, fixed_mask: np.ndarray | None) -> np.ndarray:
    """The voxels (on the tile's halo grid) where its affine is refined and judged: its core,
    inside the fixed foreground mask (given on the whole low-res grid) when there is one."""
    core = core_mask(tile)
    if fixed_mask is not None:
        core &= np.asarray(fixed_mask[tile.slices("halo")]) != 0
    return core


def core_mask(tile: Tile) -> np.ndarray:
    """True on the tile's core, on the grid of its halo (bool, z y x)."""
    mask = np.zeros(tuple(stop - start for start, stop in tile.halo), dtype=bool)
    mask[
        tuple(slice(a - h, b - h) for (a, b), (h, _) in zip(tile.core, tile.halo, strict=True))
    ] = True
    return mask


def _moving_window(moving: Image, global_affine: np.ndarray, fixed_tile: Image):
    """The region of ``moving`` that the global affine maps ``fixed_tile`` onto (plus 2
    voxels), in memory and placed where it lies, and its slices."""
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in fixed_tile.shape])))
    points = np.asarray(fixed_tile.origin) + corners * np.asarray(fixed_tile.spacing)
    voxels = ((apply_affine(global_affine, points) - np.asarray(moving.origin))
              / np.asarray(moving.spacing)).T  # fmt: skip
    window = source_window(moving, voxels, 2) or tuple(slice(0, 1) for _ in moving.shape)
    return _region_image(moving.read(window), moving, window), window


def prove_tile(
    fixed_tile: Image,
    moving: Image,
    global_affine: np.ndarray,
    matrix: np.ndarray,
    refine: dict,
    masks=(None, None),
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """The affine a tile keeps: its own ``matrix`` (or the same moved halfway toward the
    identity, :data:`SHRINK_SHARES`) only where it raises the tile's metric beyond noise
    over the identity, which is the global affine alone; else the identity.

    ``matrix`` acts before ``global_affine`` (``T = G L``); each candidate ``G L`` is judged
    on the moving image itself (``moving``: at least the part ``G`` maps the tile onto), so
    every candidate's values are interpolated once. The metric is the refinement's (local
    NCC per cube, ``refine`` config block, its finest level), every candidate on the same
    samples, inside ``masks`` (fixed: on the tile's grid; moving: on ``moving``'s).
    "Beyond noise": the weighted mean of the per-cube NCC gains over the identity exceeds
    :data:`PROOF_SIGMAS` standard errors. Returns the affine and the report fields
    ``metric_global``, ``metric_local`` (the tile's own affine) and ``decision``.
    """
    params = RefineParams.from_config(refine)
    identity = np.eye(4)
    candidates = [identity] + [identity + share * (matrix - identity) for share in SHRINK_SHARES]
    try:
        scores, weights = compare_affines(
            fixed_tile, moving, [global_affine @ c for c in candidates], params, *masks, seed=seed
        )
    except RefineError as error:
        return identity, {"decision": f"global: the tile's metric cannot be measured ({error})"}
    share = weights / weights.sum()
    metrics = scores @ share
    report = {"metric_global": round(float(metrics[0]), 6)}
    report["metric_local"] = round(float(metrics[1]), 6)
    gains = scores[1:] - scores[0]
    mean = gains @ share
    spread = np.sqrt(((gains - mean[:, None]) ** 2) @ share**2)
    best = int(np.argmax(metrics[1:]))
    if mean[best] > PROOF_SIGMAS * spread[best]:
        kind = "local" if SHRINK_SHARES[best] == 1 else f"local x {SHRINK_SHARES[best]}"
        return candidates[best + 1], report | {"decision": kind}
    reason = f"gain {mean[best]:+.2g}, not above {PROOF_SIGMAS:g} x {spread[best]:.2g} of noise"
    return identity, report | {"decision": f"global: the tile's affine does not help ({reason})"}


def _strongest_usable(
    points_um: np.ndarray, response, region: Image, usable: np.ndarray, nspots: int
) -> np.ndarray:
    """The ``nspots`` strongest of ``points_um`` (µm, z y x, in ``region``'s space) whose
    nearest voxel of ``region`` is ``usable``, strongest first."""
    voxel = np.rint((points_um - np.asarray(region.origin)) / np.asarray(region.spacing))
    keep = np.all((voxel >= 0) & (voxel < np.array(region.shape)), axis=1)
    keep[keep] = usable[tuple(voxel[keep].astype(int).T)]
    order = np.argsort(-np.asarray(response, dtype=float)[keep], kind="stable")[:nspots]
    return points_um[keep][order]


def keypoint_regions(
    tile: Tile, fixed: Image, moving: Image, global_affine: np.ndarray, margin_um: float
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Voxel boxes ``[low, high)`` of each image's low-res level (``"fixed"``, ``"moving"``)
    whose key points :func:`fit_tile` may use for ``tile``: its halo, and where the global
    affine maps the halo in the moving image, each grown by ``margin_um``."""
    low = np.array([start for start, _ in tile.halo], dtype=float)
    high = np.array([stop for _, stop in tile.halo], dtype=float) - 1
    corners = np.array(list(itertools.product(*zip(low, high, strict=True))))
    corners_um = np.asarray(fixed.origin) + corners * np.asarray(fixed.spacing)
    regions = {}
    for role, image, points in (
        ("fixed", fixed, corners_um),
        ("moving", moving, apply_affine(global_affine, corners_um)),
    ):
        spacing, origin = np.asarray(image.spacing), np.asarray(image.origin)
        first = np.floor((points.min(axis=0) - margin_um - origin) / spacing)
        last = np.ceil((points.max(axis=0) + margin_um - origin) / spacing)
        regions[role] = (first.astype(int), last.astype(int) + 1)
    return regions


def _refined(fixed_tile, moving_tile, matrix, params, tile_masks, seed):
    """A tile's RANSAC affine refined by intensities, and the refinement's status."""
    try:
        refined, report = refine_by_intensity(
            fixed_tile, moving_tile, matrix, RefineParams.from_config(params["refine"]),
            *tile_masks, seed=seed,
        )  # fmt: skip
    except RefineError as error:
        return matrix, f"kept the initial affine: {error}"
    before, after = report["metric_before"], report["metric_after"]
    return refined, f"{report['status']} (metric {before:.4f} -> {after:.4f})"


def _neighbour_offsets():
    return [o for o in itertools.product((-1, 0, 1), repeat=3) if o != (0, 0, 0)]


def fill_missing(affines: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Give every unknown tile the mean of its known neighbours' affines, repeatedly.

    ``affines`` (tz, ty, tx, 4, 4); ``known`` (tz, ty, tx) bool. Each sweep fills
    the unknown tiles that touch (26-neighbourhood) a tile known before the
    sweep. With no known tile at all, every tile gets the identity.
    """
    affines, known = affines.copy(), known.copy()
    if not known.any():
        affines[...] = np.eye(4)
        return affines
    grid = known.shape
    while not known.all():
        total = np.zeros(affines.shape)
        count = np.zeros(grid)
        for offset in _neighbour_offsets():
            source = tuple(
                slice(max(-o, 0), n - max(o, 0)) for o, n in zip(offset, grid, strict=True)
            )
            target = tuple(
                slice(max(o, 0), n - max(-o, 0)) for o, n in zip(offset, grid, strict=True)
            )
            weight = known[source]
            total[target] += np.where(weight[..., None, None], affines[source], 0.0)
            count[target] += weight
        fill = ~known & (count > 0)
        affines[fill] = total[fill] / count[fill][:, None, None]
        known |= fill
    return affines


def find_outliers(
    affines: np.ndarray, known: np.ndarray, centres: np.ndarray, tolerance: float
) -> np.ndarray:
    """Known tiles whose affine moves their own centre ``tolerance`` µm away from
    where the median of their known neighbours moves it (at least 2 neighbours)."""
    outliers = np.zeros(known.shape, dtype=bool)
    for index in zip(*np.nonzero(known), strict=True):
        centre = centres[index]
        guesses = []
        for offset in _neighbour_offsets():
            other = tuple(i + o for i, o in zip(index, offset, strict=True))
            if all(0 <= i < n for i, n in zip(other, known.shape, strict=True)) and known[other]:
                guesses.append(apply_affine(affines[other], centre[None])[0])
        if len(guesses) >= 2:
            own = apply_affine(affines[index], centre[None])[0]
            outliers[index] = np.linalg.norm(own - np.median(guesses, axis=0)) > tolerance
    return outliers


def tile_centres(tiles: list[Tile], image: Image, grid_shape) -> np.ndarray:
    """Physical centres (µm) of the tiles' cores, shaped (tz, ty, tx, 3)."""
    centres = np.zeros((*grid_shape, 3))
    for tile in tiles:
        voxel = np.array([(start + stop - 1) / 2 for start, stop in tile.core])
        centres[tile.index] = np.asarray(image.origin) + voxel * np.asarray(image.spacing)
    return centres


def settle_tiles(
    results: dict[str, np.ndarray | None],
    report: pd.DataFrame,
    tiles: list[Tile],
    image: Image,
    tolerance: float,
    prove=None,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Grid of affines (tz, ty, tx, 4, 4) with failed and outlier tiles filled.

    ``results`` maps tile id to its fitted affine or None; the returned report
    gains a ``filled`` column saying which tiles were filled and why. ``prove``
    (``(tile, affine) -> (affine, proof)``, e.g. :func:`prove_filled` bound to the
    images) judges each filled tile's affine as a fitted one is judged; its proof
    fields replace the tile's report fields.
    """
    grid_shape = tuple(max(tile.index[a] for tile in tiles) + 1 for a in range(3))
    affines = np.full((*grid_shape, 4, 4), np.nan)
    known = np.zeros(grid_shape, dtype=bool)
    for tile in tiles:
        if results[tile.id] is not None:
            affines[tile.index], known[tile.index] = results[tile.id], True
    outliers = find_outliers(affines, known, tile_centres(tiles, image, grid_shape), tolerance)
    filled = fill_missing(affines, known & ~outliers)
    report = report.set_index("tile").loc[[tile.id for tile in tiles]].reset_index()
    reasons = []
    for tile in tiles:
        if outliers[tile.index]:
            reasons.append(f"outlier: disagrees with its neighbours by more than {tolerance} um")
        elif not known[tile.index]:
            reasons.append("failed fit")
        else:
            reasons.append("")
    report["filled"] = reasons
    if prove is not None:
        rows = report.set_index("tile")
        for tile in tiles:
            if rows.at[tile.id, "filled"]:
                filled[tile.index], proof = prove(tile, filled[tile.index])
                for column, value in proof.items():
                    rows.at[tile.id, column] = value
        report = rows.reset_index()
    return filled, report
