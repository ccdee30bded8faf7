"""Correspondences between fixed and moving key points by neighbourhood correlation.

bigstream correlates every fixed neighbourhood with every moving one (5000 x
5000 products of 25^3 voxels), which is most of its run time. Here:

1. **coarse**: the ``coarse_points`` strongest points of each image are
   correlated all against all; mutual best partners above ``match_threshold``
   give a first RANSAC affine;
2. **fine**: every fixed point is correlated only with the moving points
   within ``search_radius`` µm of where that affine sends it (the nearest
   ``MAX_CANDIDATES``, a KD-tree query); its best partner is kept if above
   ``match_threshold`` and if no other fixed point claims that partner with a
   higher correlation.

Points are physical (µm, z y x) and given strongest first.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from bigstream_core.affine_fit import AffineFitError, fit_affine_ransac
from bigstream_core.neighbourhoods import Neighbourhoods, correlation_matrix, pair_correlations
from bigstream_core.transforms import apply_affine

COARSE_POINTS = 1000
COARSE_MIN_MATCHES = 12
MAX_CANDIDATES = 8


def mutual_best(correlations: np.ndarray, threshold: float) -> np.ndarray:
    """Pairs ``(i, j)`` that are each other's best partner with correlation > threshold."""
    if correlations.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    best_moving = correlations.argmax(axis=1)
    best_fixed = correlations.argmax(axis=0)
    rows = np.arange(len(correlations))
    keep = (best_fixed[best_moving] == rows) & (correlations[rows, best_moving] > threshold)
    return np.stack([rows[keep], best_moving[keep]], axis=1)


def best_unique(pairs: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Per fixed point its best-scoring pair; each moving point kept for its best fixed point."""
    keep = scores > threshold
    pairs, scores = pairs[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    pairs = pairs[order]
    _, first_fixed = np.unique(pairs[:, 0], return_index=True)
    pairs = pairs[np.sort(first_fixed)]
    _, first_moving = np.unique(pairs[:, 1], return_index=True)
    return pairs[np.sort(first_moving)]


def coarse_affine(
    fixed_um, fixed_vectors, moving_um, moving_vectors, match_threshold, align_threshold, seed,
    coarse_points=COARSE_POINTS,
) -> tuple[np.ndarray, int]:  # fmt: skip
    """First affine from the strongest points of each image; returns ``(matrix, n_inliers)``."""
    k_fixed, k_moving = min(coarse_points, len(fixed_um)), min(coarse_points, len(moving_um))
    correlations = correlation_matrix(fixed_vectors[:k_fixed], moving_vectors[:k_moving])
    pairs = mutual_best(correlations, match_threshold)
    matrix, inliers = fit_affine_ransac(
        fixed_um[pairs[:, 0]], moving_um[pairs[:, 1]], align_threshold, seed, COARSE_MIN_MATCHES
    )
    return matrix, int(inliers.sum())


def match_near(
    fixed_um: np.ndarray,
    fixed_vectors: Neighbourhoods,
    moving_um: np.ndarray,
    moving_vectors: Neighbourhoods,
    predicted: np.ndarray,
    search_radius: float,
    match_threshold: float,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Match each fixed point among the moving points near where ``predicted`` sends it.

    ``predicted`` is a 4x4 affine (µm) guessing the transform; the candidates
    of a fixed point are the nearest ``MAX_CANDIDATES`` moving points within
    ``search_radius`` µm of its prediction. Returns ``(pairs, correlations,
    number of candidate pairs)``.
    """
    if len(fixed_um) == 0 or len(moving_um) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32), 0
    k = min(MAX_CANDIDATES, len(moving_um))
    distances, nearest = cKDTree(moving_um).query(
        apply_affine(predicted, fixed_um), k=k, distance_upper_bound=search_radius
    )
    found = np.isfinite(distances.reshape(len(fixed_um), k))
    rows = np.broadcast_to(np.arange(len(fixed_um))[:, None], found.shape)
    pairs = np.stack([rows[found], nearest.reshape(found.shape)[found]], axis=1).astype(np.int64)
    scores = pair_correlations(fixed_vectors, moving_vectors, pairs)
    pairs = best_unique(pairs, scores, match_threshold)
    return pairs, pair_correlations(fixed_vectors, moving_vectors, pairs), int(len(scores))


def match_points(
    fixed_um: np.ndarray,
    fixed_vectors: Neighbourhoods,
    moving_um: np.ndarray,
    moving_vectors: Neighbourhoods,
    match_threshold: float,
    align_threshold: float,
    search_radius: float | None = None,
    seed: int = 0,
    coarse_points: int = COARSE_POINTS,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Match fixed to moving key points; returns ``(pairs, correlations, info)``.

    ``pairs`` (M, 2) indexes (fixed, moving); ``correlations`` their Pearson r;
    ``info`` the counts of the coarse step. ``search_radius`` (µm) defaults to
    ``3 * align_threshold``. Raises :class:`AffineFitError` when even the
    coarse step finds no consistent set of matches.
    """
    radius = 3.0 * align_threshold if search_radius is None else search_radius
    try:
        initial, coarse_inliers = coarse_affine(
            fixed_um, fixed_vectors, moving_um, moving_vectors, match_threshold, align_threshold,
            seed, coarse_points,
        )  # fmt: skip
    except AffineFitError as error:
        raise AffineFitError(
            f"coarse matching of the {min(coarse_points, len(fixed_um))} strongest fixed and "
            f"{min(coarse_points, len(moving_um))} strongest moving key points failed: {error}"
        ) from error
    pairs, kept, candidates = match_near(
        fixed_um, fixed_vectors, moving_um, moving_vectors, initial, radius, match_threshold
    )
    info = {"coarse_inliers": coarse_inliers, "candidate_pairs": candidates}
    return pairs, kept, info
