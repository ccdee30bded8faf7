"""Robust affine fit between matched points (RANSAC), and its sanity checks.

Points are physical (µm, z y x); the fitted 4x4 matrix maps fixed points onto
moving points (the project's direction). RANSAC is scikit-image's, seeded, so
the same matches always give the same matrix.
"""

from __future__ import annotations

import numpy as np
from skimage.measure import ransac
from skimage.transform import AffineTransform

from bigstream_core.transforms import apply_affine

MIN_MATCHES = 50
MIN_DIAGONAL = 0.75


class AffineFitError(RuntimeError):
    """No trustworthy affine: too few matches, too few inliers or a degenerate matrix."""


def fit_affine_ransac(
    fixed_um: np.ndarray,
    moving_um: np.ndarray,
    align_threshold: float,
    seed: int = 0,
    min_matches: int = MIN_MATCHES,
    max_trials: int = 20000,
) -> tuple[np.ndarray, np.ndarray]:
    """RANSAC affine from matched points; returns ``(matrix 4x4, inlier mask)``.

    ``align_threshold`` is the inlier distance in µm. Raises
    :class:`AffineFitError` with the counts when there are fewer than
    ``min_matches`` matches or inliers.
    """
    count = len(fixed_um)
    if count < min_matches:
        raise AffineFitError(f"{count} matches, fewer than the {min_matches} needed for an affine")
    model, inliers = ransac(
        (np.asarray(fixed_um, float), np.asarray(moving_um, float)),
        AffineTransform,
        min_samples=4,
        residual_threshold=align_threshold,
        max_trials=max_trials,
        stop_probability=0.9999,
        rng=seed,
    )
    n_inliers = 0 if inliers is None else int(inliers.sum())
    if model is None or n_inliers < min_matches:
        raise AffineFitError(
            f"{n_inliers} of {count} matches agree within align_threshold={align_threshold} um, "
            f"fewer than the {min_matches} needed"
        )
    return np.asarray(model.params, dtype=float), inliers


def check_affine(matrix: np.ndarray, min_diagonal: float = MIN_DIAGONAL) -> None:
    """Raise :class:`AffineFitError` if a diagonal entry of the linear part is too small."""
    diagonal = np.diag(matrix)[:3]
    if np.any(diagonal < min_diagonal):
        raise AffineFitError(
            f"degenerate affine: diagonal {np.round(diagonal, 3).tolist()} has an entry under "
            f"{min_diagonal} (z, y, x)"
        )


def residuals(matrix: np.ndarray, fixed_um: np.ndarray, moving_um: np.ndarray) -> np.ndarray:
    """Distance (µm) between each moving point and its fixed partner mapped by ``matrix``."""
    return np.linalg.norm(apply_affine(matrix, fixed_um) - moving_um, axis=1)
