"""The global affine stage, step by step: key points, matches, RANSAC fit.

Each step is one function, so the workflow runs them as separate jobs (key
points per tile, one matching job, one fitting job) and the Python API
(:mod:`bigstream_core.api`) chains them in memory. Points are physical (µm,
z y x); the affine maps fixed points to moving points.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from bigstream_core.affine_fit import AffineFitError, check_affine, fit_affine_ransac, residuals
from bigstream_core.io import Image
from bigstream_core.keypoints import COLUMNS, keypoint_grid, tile_keypoints
from bigstream_core.matching import match_points
from bigstream_core.neighbourhoods import extract

log = logging.getLogger(__name__)

MATCH_COLUMNS = ["fixed_z_um", "fixed_y_um", "fixed_x_um", "moving_z_um", "moving_y_um",
                 "moving_x_um", "correlation"]  # fmt: skip


class GlobalAffineError(RuntimeError):
    """The global affine could not be found; the message names the image and the counts."""


def image_keypoints(
    image: Image,
    min_radius: float,
    max_radius: float,
    num_sigma_max: int,
    cc_radius: int,
    blocksize="auto",
) -> pd.DataFrame:
    """Every key point of ``image`` above its tiles' noise, tile by tile, strongest first (µm).

    ``blocksize``: voxels (z, y, x) per tile, or ``"auto"``
    (:func:`bigstream_core.keypoints.auto_blocksize`). Tiles run in a thread pool
    (scipy.ndimage releases the GIL), one per core.
    """

    def detect(tile):
        return tile_keypoints(image, tile, min_radius, max_radius, num_sigma_max, cc_radius)

    tiles = keypoint_grid(image.shape, blocksize, min_radius, max_radius)
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        tables = list(pool.map(detect, tiles))
    return strongest(tables)


def strongest(tables: Iterable[pd.DataFrame], nspots: int | None = None) -> pd.DataFrame:
    """Tiles' key point tables merged, strongest first (ties in the tables' order), at most
    ``nspots`` rows (all: None). With ``nspots`` the tables are taken one at a time, keeping
    the strongest ``nspots`` rows so far: a generator that reads them holds ``nspots`` rows
    and one table at a time, however many tables (however large the image), and the rows
    kept are those one sort of all of them keeps."""
    if nspots is None:
        tables = list(tables)
        tables = [pd.concat(tables, ignore_index=True)] if tables else []
    best = pd.DataFrame(columns=COLUMNS)
    for table in tables:
        merged = pd.concat([best, table], ignore_index=True) if len(best) else table
        best = merged.sort_values("response", ascending=False, kind="stable").head(nspots)
    return best.reset_index(drop=True)


def _check_enough(points: pd.DataFrame, role: str, minimum: int = 4) -> None:
    if len(points) < minimum:
        raise GlobalAffineError(
            f"{role} image: {len(points)} key points found (blob radii as configured); at least "
            f"{minimum} are needed. Is the image empty, or are min_radius/max_radius wrong?"
        )


def match_images(
    fixed: Image,
    fixed_points: pd.DataFrame,
    moving: Image,
    moving_points: pd.DataFrame,
    cc_radius: int,
    match_threshold: float,
    align_threshold: float,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict]:
    """Correspondences between the two images' key points (strongest first).

    Returns the matches table (:data:`MATCH_COLUMNS`, µm) and a dict of counts
    and step times. Raises :class:`GlobalAffineError` naming the image and count
    when there is too little to match.
    """
    _check_enough(fixed_points, "fixed")
    _check_enough(moving_points, "moving")
    start = time.perf_counter()
    fixed_um = fixed_points[COLUMNS[:3]].to_numpy()
    moving_um = moving_points[COLUMNS[:3]].to_numpy()
    fixed_vectors = extract(fixed, fixed_um, cc_radius)
    moving_vectors = extract(moving, moving_um, cc_radius)
    extracted = time.perf_counter()
    fixed_um, fixed_vectors = fixed_um[fixed_vectors.valid], fixed_vectors[fixed_vectors.valid]
    moving_um, moving_vectors = (
        moving_um[moving_vectors.valid],
        moving_vectors[moving_vectors.valid],
    )
    try:
        pairs, correlations, info = match_points(
            fixed_um, fixed_vectors, moving_um, moving_vectors, match_threshold, align_threshold,
            seed=seed,
        )  # fmt: skip
    except AffineFitError as error:
        raise GlobalAffineError(
            f"matching {len(fixed_um)} fixed and {len(moving_um)} moving key points failed: {error}"
        ) from error
    table = pd.DataFrame(
        np.hstack([fixed_um[pairs[:, 0]], moving_um[pairs[:, 1]]]), columns=MATCH_COLUMNS[:6]
    )
    table["correlation"] = correlations
    info.update(
        fixed_points=int(len(fixed_points)),
        moving_points=int(len(moving_points)),
        matches=int(len(table)),
        extract_s=round(extracted - start, 3),
        match_s=round(time.perf_counter() - extracted, 3),
    )
    return table, info


def fit_global_affine(
    matches: pd.DataFrame, align_threshold: float, seed: int = 0
) -> tuple[np.ndarray, dict]:
    """RANSAC affine (4x4, fixed -> moving, µm) from the matches, with its report.

    Raises :class:`GlobalAffineError` (with the counts) when there are fewer
    than 50 matches or inliers, or when the matrix is degenerate.
    """
    start = time.perf_counter()
    fixed_um = matches[MATCH_COLUMNS[:3]].to_numpy()
    moving_um = matches[MATCH_COLUMNS[3:6]].to_numpy()
    try:
        matrix, inliers = fit_affine_ransac(fixed_um, moving_um, align_threshold, seed)
        check_affine(matrix)
    except AffineFitError as error:
        raise GlobalAffineError(f"global affine failed: {error}") from error
    distance = residuals(matrix, fixed_um[inliers], moving_um[inliers])
    report = {
        "matches": int(len(matches)),
        "inliers": int(inliers.sum()),
        "residual_median_um": float(np.median(distance)),
        "residual_p90_um": float(np.percentile(distance, 90)),
        "fit_s": round(time.perf_counter() - start, 3),
    }
    return matrix, report
