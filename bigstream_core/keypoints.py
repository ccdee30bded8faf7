"""Key points: multi-scale Laplacian-of-Gaussian blob detection.

The bigstream recipe: a white top-hat removes the background, then blobs are
the maxima of the scale-normalised LoG response over space and scale, for blob
radii between ``min_radius`` and ``max_radius`` voxels (in 3D a blob of radius
``r`` responds most at ``sigma = r / sqrt(3)``).

Faster than ``skimage.feature.blob_log`` on the same recipe: float32
throughout; the Gaussian scale space is built as a cascade (each scale smooths
the previous one by the missing ``sqrt(s_k^2 - s_{k-1}^2)``), and the LoG is
the difference of neighbouring Gaussians (``dG/dsigma = sigma LoG``, the SIFT
approximation), one subtraction per scale instead of three filters; the strongest response
over scales is kept per voxel and one spatial maximum filter finds the peaks,
so memory holds a few tile-sized arrays whatever the number of scales.
Positions are refined to sub-voxel precision by a parabola through the
response along each axis.

Axis order z, y, x; positions in voxels of the array given (or µm where a
function says so).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

from bigstream_core.io import Image
from bigstream_core.tiling import Tile

NOISE_MULTIPLE = 3.0
NOISE_SAMPLE_STEP = 7
COLUMNS = ["z_um", "y_um", "x_um", "radius_vox", "response", "intensity"]


def keypoint_halo(max_radius: float) -> int:
    """Halo (voxels) of a key-point tile: blobs up to ``max_radius`` on a tile edge are whole."""
    return math.ceil(2 * max_radius)


def log_sigmas(min_radius: float, max_radius: float, num_sigma_max: int = 10) -> np.ndarray:
    """Gaussian sigmas (voxels) searched for blob radii in ``[min_radius, max_radius]``.

    One scale per voxel of radius range, at most ``num_sigma_max`` (bigstream's rule).
    """
    if min_radius <= 0 or max_radius < min_radius:
        raise ValueError(
            f"blob radii must satisfy 0 < min_radius <= max_radius; got min_radius={min_radius}, "
            f"max_radius={max_radius}"
        )
    count = max(1, min(num_sigma_max, int(max_radius - min_radius) + 1))
    return np.linspace(min_radius, max_radius, count) / math.sqrt(3)


def _difference_step(sigmas: np.ndarray) -> float:
    """Sigma step between the Gaussians whose difference gives each scale's response."""
    return float(sigmas[-1] - sigmas[-2]) if len(sigmas) > 1 else 0.2 * float(sigmas[-1])


def _response_radii(sigmas: np.ndarray) -> np.ndarray:
    """Blob radius (voxels) each scale responds to best: the midpoint sigma times sqrt(3)."""
    return (sigmas + 0.5 * _difference_step(sigmas)) * math.sqrt(3)


def _log_responses(image: np.ndarray, sigmas: np.ndarray):
    """Yield ``(k, response)``: the scale-normalised ``-sigma^2 * LoG`` at ``sigmas[k]``.

    Computed as a difference of Gaussians, since ``dG/dsigma = sigma * LoG``:
    ``sigma^2 LoG ~ sigma (G(s_k+1) - G(s_k)) / (s_k+1 - s_k)`` with ``sigma``
    the midpoint (float32). Needs one Gaussian past the last scale.
    """
    levels = np.append(sigmas, sigmas[-1] + _difference_step(sigmas))
    previous_sigma, previous = 0.0, image
    for k, sigma in enumerate(levels):
        increment = math.sqrt(sigma**2 - previous_sigma**2)
        current = ndimage.gaussian_filter(previous, increment, truncate=3.0, output=np.float32)
        if k > 0:
            scale = 0.5 * (sigma + previous_sigma) / (sigma - previous_sigma)
            previous -= current
            previous *= scale
            yield k - 1, previous
        previous_sigma, previous = sigma, current


def _refine(response: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """Sub-voxel peak positions: vertex of a parabola through the 3 samples per axis."""
    refined = peaks.astype(np.float64)
    upper = np.array(response.shape) - 1
    for axis in range(3):
        inside = (peaks[:, axis] > 0) & (peaks[:, axis] < upper[axis])
        lower_idx, upper_idx = peaks[inside].copy(), peaks[inside].copy()
        lower_idx[:, axis] -= 1
        upper_idx[:, axis] += 1
        left = response[tuple(lower_idx.T)]
        centre = response[tuple(peaks[inside].T)]
        right = response[tuple(upper_idx.T)]
        curvature = left - 2 * centre + right
        safe = np.where(curvature < 0, curvature, 1)
        offset = np.where(curvature < 0, 0.5 * (left - right) / safe, 0)
        refined[inside, axis] += np.clip(offset, -0.5, 0.5)
    return refined


def detect_blobs(
    image: np.ndarray,
    min_radius: float,
    max_radius: float,
    num_sigma_max: int = 10,
    threshold: float = 0.0,
    valid: np.ndarray | None = None,
) -> pd.DataFrame:
    """Blobs of a 3D image: LoG maxima over space and scale after a white top-hat.

    ``image`` is z, y, x; radii are voxels. A blob is a voxel whose strongest
    response over all scales is also the largest in its 3x3x3 neighbourhood
    (so one point per blob, at its best scale), and whose response stands out
    of the tile's noise (:func:`noise_floor`). Returns a table with columns
    ``z``, ``y``, ``x`` (sub-voxel positions, voxels), ``radius_vox``,
    ``response`` (scale-normalised LoG, larger = stronger blob) and
    ``intensity`` (the image value at the blob's voxel), one row per maximum
    whose response also exceeds ``threshold``. ``valid`` (bool, the image's
    shape) marks the voxels that hold data (e.g. not the zeros outside a
    resampled image): blobs are kept there only, and the noise is measured there.
    """
    if image.ndim != 3:
        raise ValueError(f"expected a 3D (z, y, x) image, got shape {image.shape}")
    sigmas = log_sigmas(min_radius, max_radius, num_sigma_max)
    radii = _response_radii(sigmas)
    data = image.astype(np.float32, copy=False)
    footprint_size = 2 * math.ceil(max_radius) + 1
    background_free = ndimage.white_tophat(data, size=footprint_size).astype(np.float32)
    best = np.full(image.shape, -np.inf, dtype=np.float32)
    best_scale = np.zeros(image.shape, dtype=np.uint8)
    for k, response in _log_responses(background_free, sigmas):
        stronger = response > best
        np.copyto(best, response, where=stronger)
        best_scale[stronger] = k
    is_peak = best > max(threshold, noise_floor(best if valid is None else best[valid]))
    if valid is not None:
        is_peak &= valid
    is_peak &= best >= ndimage.maximum_filter(best, size=3, mode="nearest")
    peaks = np.argwhere(is_peak)
    positions = _refine(best, peaks) if len(peaks) else np.zeros((0, 3))
    index = tuple(peaks.T)
    table = pd.DataFrame(
        {
            "z": positions[:, 0],
            "y": positions[:, 1],
            "x": positions[:, 2],
            "radius_vox": radii[best_scale[index]],
            "response": best[index],
            "intensity": image[index].astype(np.float32),
        }
    )
    return _without_plateau_twins(table)


def noise_floor(response: np.ndarray) -> float:
    """Response level that noise does not reach: median + ``NOISE_MULTIPLE`` robust sigmas.

    Most voxels of a tile are not blob centres, so the median and the median
    absolute deviation of the scale-maximum response describe the noise and
    texture; on the phantoms real cells respond about 100 times above that.
    Estimated on every ``NOISE_SAMPLE_STEP``-th voxel.
    """
    sample = response.ravel()[::NOISE_SAMPLE_STEP]
    if sample.size == 0:  # no voxel holds data: nothing stands out
        return np.inf
    median = float(np.median(sample))
    spread = 1.4826 * float(np.median(np.abs(sample - median)))
    return median + NOISE_MULTIPLE * spread


def _without_plateau_twins(table: pd.DataFrame) -> pd.DataFrame:
    """Drop all but the strongest of peaks closer than one voxel (a flat top gives two)."""
    table = table.sort_values("response", ascending=False, kind="stable").reset_index(drop=True)
    pairs = cKDTree(table[["z", "y", "x"]].to_numpy()).query_pairs(1.0, output_type="ndarray")
    return table.drop(index=np.unique(pairs.max(axis=1))).reset_index(drop=True)


def tile_keypoints(
    image: Image,
    tile: Tile,
    min_radius: float,
    max_radius: float,
    num_sigma_max: int,
    nspots: int,
    border: int,
    valid: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> pd.DataFrame:
    """Key points of one tile of ``image``, in physical coordinates.

    Reads the tile's halo, detects blobs, and keeps those whose voxel lies in
    the tile's core (so a blob seen in two halos is reported once) and at least
    ``border`` voxels from the image edge (its correlation neighbourhood must
    fit), at most the ``nspots`` strongest. Columns: ``z_um``, ``y_um``,
    ``x_um`` (µm), ``radius_vox``, ``response``, ``intensity``. ``valid``
    (bool, the halo's shape) limits the search as in :func:`detect_blobs`;
    ``mask`` (bool, the whole image's shape, e.g. memory-mapped) drops the
    points whose nearest voxel is outside it.
    """
    data = image.read(tile.slices("halo"))
    blobs = detect_blobs(data, min_radius, max_radius, num_sigma_max, valid=valid)
    offset = np.array([start for start, _ in tile.halo], dtype=float)
    voxel = blobs[["z", "y", "x"]].to_numpy() + offset
    nearest = voxel.round()
    core_low = np.array([start for start, _ in tile.core])
    core_high = np.array([stop for _, stop in tile.core])
    keep = np.all((nearest >= core_low) & (nearest < core_high), axis=1)
    keep &= np.all((nearest >= border) & (nearest < np.array(image.shape) - border), axis=1)
    if mask is not None:
        inside = nearest[keep].astype(int)
        keep[keep] = np.asarray(mask[tuple(inside.T)], dtype=bool)
    blobs, voxel = blobs[keep], voxel[keep]
    physical = np.asarray(image.origin) + voxel * np.asarray(image.spacing)
    table = pd.DataFrame(physical, columns=COLUMNS[:3])
    for column in COLUMNS[3:]:
        table[column] = blobs[column].to_numpy()
    return table.nlargest(nspots, "response").reset_index(drop=True)
