"""Robust affine fit between matched points (RANSAC), and its sanity checks.

Points are physical (µm, z y x); the fitted 4x4 matrix maps fixed points onto
moving points (the project's direction). RANSAC trials are drawn from a seeded
generator and evaluated all at once with numpy (batched 4-point solves and
residuals): scikit-image's ``ransac`` runs one Python-level trial at a time
(about 1 ms each here), which made a failing local tile cost seconds; here a
trial costs microseconds. The final model is the least-squares fit on the best
trial's inliers, refined once.
"""

from __future__ import annotations

import numpy as np

from bigstream_core.transforms import apply_affine

MIN_MATCHES = 50
MIN_DIAGONAL = 0.75
TRIAL_BATCH = 256
STOP_CONFIDENCE = 0.9999


class AffineFitError(RuntimeError):
    """No trustworthy affine: too few matches, too few inliers or a degenerate matrix."""


def least_squares_affine(fixed_um: np.ndarray, moving_um: np.ndarray) -> np.ndarray:
    """4x4 affine minimising the squared distances ``|A fixed - moving|`` (needs >= 4 points)."""
    design = np.hstack([fixed_um, np.ones((len(fixed_um), 1))])
    solution, *_ = np.linalg.lstsq(design, moving_um, rcond=None)
    matrix = np.eye(4)
    matrix[:3] = solution.T
    return matrix


def _trial_inliers(design, moving_um, samples, threshold):
    """Inlier masks (trials, N) of the exact 4-point affines of ``samples``; None if degenerate."""
    systems = design[samples]  # (T, 4, 4)
    usable = np.abs(np.linalg.det(systems)) > 1e-9
    solutions = np.linalg.solve(systems[usable], moving_um[samples[usable]])  # (t, 4, 3)
    predicted = np.einsum("nk,tkc->tnc", design, solutions)
    distance = np.linalg.norm(predicted - moving_um[None], axis=2)
    masks = np.zeros((len(samples), len(moving_um)), dtype=bool)
    masks[usable] = distance < threshold
    return masks


def trials_needed(inlier_fraction: float, confidence: float = STOP_CONFIDENCE) -> float:
    """Trials after which an all-inlier 4-point sample was drawn with ``confidence``."""
    clean = inlier_fraction**4
    if clean >= 1.0:
        return 1.0
    if clean <= 0.0:
        return np.inf
    return np.log(1 - confidence) / np.log(1 - clean)


def fit_affine_ransac(
    fixed_um: np.ndarray,
    moving_um: np.ndarray,
    align_threshold: float,
    seed: int = 0,
    min_matches: int = MIN_MATCHES,
    max_trials: int = 5000,
) -> tuple[np.ndarray, np.ndarray]:
    """RANSAC affine from matched points; returns ``(matrix 4x4, inlier mask)``.

    ``align_threshold`` is the inlier distance in µm. Trials stop once an
    all-inlier sample has been drawn with probability ``STOP_CONFIDENCE``
    given the best inlier fraction so far, or after ``max_trials``. The same points and seed
    always give the same result. Raises :class:`AffineFitError` with the counts
    when there are fewer than ``min_matches`` matches or inliers.
    """
    fixed_um, moving_um = np.asarray(fixed_um, float), np.asarray(moving_um, float)
    count = len(fixed_um)
    if count < max(min_matches, 4):
        raise AffineFitError(f"{count} matches, fewer than the {min_matches} needed for an affine")
    design = np.hstack([fixed_um, np.ones((count, 1))])
    rng = np.random.default_rng(seed)
    best, best_count, trials, needed = None, -1, 0, max_trials
    while trials < min(needed, max_trials):
        draws = rng.random((min(TRIAL_BATCH, max_trials - trials), count))
        samples = np.argsort(draws, axis=1)[:, :4]
        masks = _trial_inliers(design, moving_um, samples, align_threshold)
        counts = masks.sum(axis=1)
        trials += len(samples)
        if counts.max() > best_count:
            best, best_count = masks[counts.argmax()], int(counts.max())
            needed = trials_needed(best_count / count)
    inliers = best
    for _ in range(2):  # least squares on the inliers, then the inliers of that fit
        if inliers.sum() < 4:
            break
        matrix = least_squares_affine(fixed_um[inliers], moving_um[inliers])
        inliers = residuals(matrix, fixed_um, moving_um) < align_threshold
    n_inliers = int(inliers.sum())
    if n_inliers < min_matches:
        raise AffineFitError(
            f"{n_inliers} of {count} matches agree within align_threshold={align_threshold} um, "
            f"fewer than the {min_matches} needed"
        )
    return least_squares_affine(fixed_um[inliers], moving_um[inliers]), inliers


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
