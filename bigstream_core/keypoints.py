"""Key points: multi-scale Laplacian-of-Gaussian blob detection on a scale pyramid.

The bigstream recipe: a white top-hat removes the background, then blobs are
the maxima of the scale-normalised LoG response over space and scale, for blob
radii between ``min_radius`` and ``max_radius`` voxels (in 3D a blob of radius
``r`` responds most at ``sigma = r / sqrt(3)``).

Organised as SIFT does, in octaves: a scale of sigma ``s`` (voxels) is searched
on the image averaged over ``2^o`` voxels per axis, where it spans 1.6 to 3.2
voxels (:data:`SIGMA_FLOOR`), so a blob of radius 20 is found where it is 3-6
voxels across, and the cost is a few Gaussian passes over the finest octave
whatever ``max_radius`` is (with radii of 6-20 voxels the full resolution is only
read and averaged). Within an octave the Gaussians cascade (each scale smooths
the previous one by the missing ``sqrt(s_k^2 - s_{k-1}^2)``) and the LoG is the
difference of neighbouring Gaussians (``dG/dsigma = sigma LoG``, the SIFT
approximation); the strongest response over the octave's scales is kept per
voxel, one spatial maximum filter finds the octave's peaks, and a peak is kept
where no other octave responds more strongly at its place, so every blob is
reported once, at its best scale. Positions are refined to sub-voxel precision
by a parabola through the response along each axis, in the octave's voxels.

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
from bigstream_core.tiling import Tile, tile_grid

NOISE_MULTIPLE = 3.0
NOISE_SAMPLE_STEP = 7
SIGMA_FLOOR = 1.6
"""Smallest Gaussian sigma, in voxels of an octave, searched on that octave (SIFT's
``sigma_0``): sigma ``s`` (full-resolution voxels) is searched on octave
``o = max(0, floor(log2(s / SIGMA_FLOOR)))``, the image averaged over ``2^o`` voxels per axis."""
COLUMNS = ["z_um", "y_um", "x_um", "radius_vox", "response", "intensity"]


def keypoint_halo(max_radius: float) -> int:
    """Halo (voxels) of a key-point tile: blobs up to ``max_radius`` on a tile edge are whole."""
    return math.ceil(2 * max_radius)


def log_sigmas(min_radius: float, max_radius: float, num_sigma_max: int = 10) -> np.ndarray:
    """Gaussian sigmas (voxels) searched for blob radii in ``[min_radius, max_radius]``.

    One scale per voxel of radius range, at most ``num_sigma_max`` (bigstream's rule),
    spaced geometrically (a constant ratio, as octaves of a pyramid need).
    """
    if min_radius <= 0 or max_radius < min_radius:
        raise ValueError(
            f"blob radii must satisfy 0 < min_radius <= max_radius; got min_radius={min_radius}, "
            f"max_radius={max_radius}"
        )
    count = max(1, min(num_sigma_max, int(max_radius - min_radius) + 1))
    return np.geomspace(min_radius, max_radius, count) / math.sqrt(3)


def _scale_ratio(sigmas: np.ndarray) -> float:
    """Ratio between neighbouring sigmas (1.2 for a single scale)."""
    return float(sigmas[1] / sigmas[0]) if len(sigmas) > 1 else 1.2


def _response_radii(sigmas: np.ndarray) -> np.ndarray:
    """Blob radius (voxels) each scale responds to best: the sigma between the two Gaussians
    of its difference (their geometric mean) times sqrt(3)."""
    return sigmas * math.sqrt(_scale_ratio(sigmas)) * math.sqrt(3)


def octave_of(sigma: float) -> int:
    """The octave that searches Gaussian ``sigma`` (full-resolution voxels)."""
    return max(0, math.floor(math.log2(sigma / SIGMA_FLOOR)))


def _blocks(volume: np.ndarray) -> np.ndarray:
    """``volume`` as 2 x 2 x 2 voxel blocks (axes 1, 3, 5), edge voxels repeated to even sizes."""
    pad = [(0, n % 2) for n in volume.shape]
    if any(after for _, after in pad):
        volume = np.pad(volume, pad, mode="edge")
    z, y, x = (n // 2 for n in volume.shape)
    return volume.reshape(z, 2, y, 2, x, 2)


def _halve(volume: np.ndarray) -> np.ndarray:
    """The mean of every 2 x 2 x 2 voxel block, float32 (no full-size float copy is made)."""
    return _blocks(volume).mean(axis=(1, 3, 5), dtype=np.float32)


def first_octave(min_radius: float) -> int:
    """The finest octave searched for blobs of ``min_radius`` voxels and up."""
    return octave_of(min_radius / math.sqrt(3))


def _halve_mask(mask: np.ndarray) -> np.ndarray:
    """True where a whole 2 x 2 x 2 voxel block of ``mask`` is."""
    return _blocks(mask).all(axis=(1, 3, 5))


def _octave_voxel_variance(octave: int) -> float:
    """Blur (variance, in the octave's voxels^2) that averaging 2^o voxels per axis left:
    each halving is a 2-voxel box of variance 1/4 of the level it averages."""
    return sum(0.25 * 4.0**j for j in range(octave)) / 4.0**octave


def _log_responses(image: np.ndarray, sigmas: np.ndarray, ratio: float, prior_variance: float):
    """Yield ``(k, response)``: the scale-normalised ``-sigma^2 * LoG`` at ``sigmas[k]`` (voxels
    of ``image``, which is already blurred by ``prior_variance`` voxels^2).

    Computed as a difference of Gaussians, since ``dG/dsigma = sigma * LoG``:
    ``sigma^2 LoG ~ sigma (G(s_k+1) - G(s_k)) / (s_k+1 - s_k)`` with ``sigma``
    the midpoint (float32). Needs one Gaussian past the last scale.
    """
    levels = np.append(sigmas, sigmas[-1] * ratio)
    previous_sigma, previous = math.sqrt(prior_variance), image
    for k, sigma in enumerate(levels):
        increment = math.sqrt(max(sigma**2 - previous_sigma**2, 0.0))
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


class _Octave:
    """One octave's strongest response over its scales, and its peaks."""

    def __init__(self, octave: int, image, valid, scales, sigmas, ratio):
        self.octave, self.factor = octave, 2**octave
        self.best = np.full(image.shape, -np.inf, dtype=np.float32)
        self.best_scale = np.zeros(image.shape, dtype=np.uint8)
        variance = _octave_voxel_variance(octave)
        for k, response in _log_responses(image, sigmas[scales] / self.factor, ratio, variance):
            stronger = response > self.best
            np.copyto(self.best, response, where=stronger)
            self.best_scale[stronger] = scales[k]
        self.valid = valid

    def peaks(self, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Peaks above the noise: full-resolution positions (voxels), responses, scale indices."""
        best = self.best
        is_peak = best > max(
            threshold, noise_floor(best if self.valid is None else best[self.valid])
        )
        if self.valid is not None:
            is_peak &= self.valid
        is_peak &= best >= ndimage.maximum_filter(best, size=3, mode="nearest")
        peaks = np.argwhere(is_peak)
        refined = _refine(best, peaks) if len(peaks) else np.zeros((0, 3))
        index = tuple(peaks.T)
        responses = best[index]
        keep = _without_plateau_twins(refined, responses)
        return (
            (refined[keep] + 0.5) * self.factor - 0.5,
            responses[keep],
            self.best_scale[index][keep],
        )

    def response_at(self, positions: np.ndarray) -> np.ndarray:
        """This octave's strongest response at full-resolution ``positions`` (nearest voxel)."""
        voxel = np.rint((positions + 0.5) / self.factor - 0.5).astype(int)
        voxel = np.clip(voxel, 0, np.array(self.best.shape) - 1)
        return self.best[tuple(voxel.T)]


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
    (on its octave: one point per blob, at its best scale), and whose response
    stands out of the tile's noise on that octave (:func:`noise_floor`).
    Returns a table with columns ``z``, ``y``, ``x`` (sub-voxel positions,
    voxels), ``radius_vox``, ``response`` (scale-normalised LoG, larger =
    stronger blob) and ``intensity`` (the image value at the blob's voxel), one
    row per maximum whose response also exceeds ``threshold``, strongest first.
    ``valid`` (bool, the image's shape) marks the voxels that hold data (e.g.
    not the zeros outside a resampled image): blobs are kept there only, and
    the noise is measured there.
    """
    if image.ndim != 3:
        raise ValueError(f"expected a 3D (z, y, x) image, got shape {image.shape}")
    sigmas = log_sigmas(min_radius, max_radius, num_sigma_max)
    ratio = _scale_ratio(sigmas)
    octaves = np.array([octave_of(sigma) for sigma in sigmas])
    first = int(octaves.min())
    level, level_valid = image, valid
    for _ in range(first):
        level = _halve(level)
        level_valid = None if level_valid is None else _halve_mask(level_valid)
    level = level.astype(np.float32, copy=False)
    size = 2 * math.ceil(max_radius / 2**first) + 1
    level = ndimage.white_tophat(level, size=size).astype(np.float32, copy=False)
    searched = []
    for octave in range(first, int(octaves.max()) + 1):
        if octave > first:
            level = _halve(level)
            level_valid = None if level_valid is None else _halve_mask(level_valid)
        scales = np.flatnonzero(octaves == octave)
        if len(scales):
            searched.append(_Octave(octave, level, level_valid, scales, sigmas, ratio))
    found = [octave.peaks(threshold) for octave in searched]
    positions = np.concatenate([p for p, _, _ in found])
    responses = np.concatenate([r for _, r, _ in found])
    scales = np.concatenate([s for _, _, s in found]).astype(int)
    keep = np.ones(len(positions), dtype=bool)
    start = 0
    for octave, (p, _, _) in zip(searched, found, strict=True):
        stop = start + len(p)
        for other in searched:
            if other is not octave:
                keep[start:stop] &= responses[start:stop] >= other.response_at(p)
        start = stop
    positions, responses, scales = positions[keep], responses[keep], scales[keep]
    nearest = np.clip(np.rint(positions).astype(int), 0, np.array(image.shape) - 1)
    table = pd.DataFrame(
        {
            "z": positions[:, 0],
            "y": positions[:, 1],
            "x": positions[:, 2],
            "radius_vox": _response_radii(sigmas)[scales],
            "response": responses,
            "intensity": image[tuple(nearest.T)].astype(np.float32),
        }
    )
    return table.sort_values("response", ascending=False, kind="stable").reset_index(drop=True)


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


def _without_plateau_twins(positions: np.ndarray, responses: np.ndarray) -> np.ndarray:
    """Which peaks to keep: all but the strongest of peaks closer than one voxel (a flat top
    gives two). Positions in voxels of the octave they were found on."""
    keep = np.ones(len(positions), dtype=bool)
    pairs = cKDTree(positions).query_pairs(1.0, output_type="ndarray")
    if len(pairs):
        weaker = np.where(responses[pairs[:, 0]] < responses[pairs[:, 1]], pairs[:, 0], pairs[:, 1])
        keep[weaker] = False
    return keep


def tile_keypoints(
    image: Image,
    tile: Tile,
    min_radius: float,
    max_radius: float,
    num_sigma_max: int,
    border: int,
    valid: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> pd.DataFrame:
    """Every key point of one tile of ``image`` that stands out of the noise, in µm.

    Reads the tile's halo, detects blobs, and keeps those whose voxel lies in
    the tile's core (so a blob seen in two halos is reported once) and at least
    ``border`` voxels from the image edge (its correlation neighbourhood must
    fit), strongest first. Columns: ``z_um``, ``y_um``, ``x_um`` (µm),
    ``radius_vox``, ``response``, ``intensity``. ``valid`` (bool, the halo's
    shape) limits the search as in :func:`detect_blobs`; ``mask`` (bool, the
    whole image's shape, e.g. memory-mapped) drops the points whose nearest
    voxel is outside it. NaN or infinite voxels (read as 0, a hole with sharp
    edges) are left out with everything within ``max_radius + border`` voxels of
    them, so no blob sits on a hole's edge and no correlation cube reaches into one.
    The global stage keeps its ``nspots`` strongest of all tiles; the local stage
    its ``nspots`` strongest near each of its tiles.
    """
    data, holes = image.read_with_holes(tile.slices("halo"))
    if holes is not None:
        reach = 2 * (math.ceil(max_radius) + border) + 1
        near = ndimage.maximum_filter(holes.view(np.uint8), size=reach).astype(bool)
        valid = ~near if valid is None else valid & ~near
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
    return table


JOB_READ_VOXELS = 48 * 2**20
"""Most voxels an automatically sized key-point job reads (tile and halo): 96 MB as uint16."""
JOB_OCTAVE_VOXELS = 16 * 2**20
"""Most voxels on the finest octave of an automatically sized key-point job, where it filters."""
MIN_TILE_EDGE = 64
"""Smallest edge (voxels) of an automatically sized key-point tile, unless the image is smaller."""


def auto_blocksize(
    shape: tuple[int, int, int], min_radius: float, max_radius: float
) -> tuple[int, int, int]:
    """A key-point tile size (voxels, z y x) that gives each job real work.

    A job reads at most :data:`JOB_READ_VOXELS` voxels with its halo and filters at most
    :data:`JOB_OCTAVE_VOXELS` on its finest octave (8x as many are read when the smallest
    radius is searched on the image averaged 2x per axis), so its memory is bounded
    whatever the image. Axes shorter than the budget's edge are taken whole and the others
    grow, so a small image gets one or a few tiles and a terabyte image fans out into
    thousands. Edges are multiples of 16 voxels, at least :data:`MIN_TILE_EDGE`, and even out
    the tiles along an axis (450 voxels in two tiles of 240, not 416 + 34).
    """
    first = first_octave(min_radius)
    budget = min(JOB_READ_VOXELS, JOB_OCTAVE_VOXELS * 8**first)
    halo = 2 * keypoint_halo(max_radius)
    size = list(shape)
    for done, axis in enumerate(np.argsort(shape)):
        edge = budget ** (1 / (3 - done)) - halo
        largest = max(MIN_TILE_EDGE, edge // 16 * 16)
        even = 16 * math.ceil(shape[axis] / math.ceil(shape[axis] / largest) / 16)
        size[axis] = int(min(shape[axis], even))
        budget /= min(size[axis] + halo, shape[axis])
    return tuple(size)


def keypoint_grid(shape, blocksize, min_radius: float, max_radius: float) -> list[Tile]:
    """Key-point tiles of an image of ``shape`` voxels (z, y, x): ``blocksize`` voxels, or
    ``"auto"`` (:func:`auto_blocksize`), with a halo of ``2 * max_radius`` voxels so that
    blobs on a tile's edge are whole."""
    if isinstance(blocksize, str):
        if blocksize != "auto":
            raise ValueError(f"blocksize {blocksize!r}: expected 3 voxel counts (z y x) or 'auto'")
        blocksize = auto_blocksize(shape, min_radius, max_radius)
    return tile_grid(shape, blocksize, (keypoint_halo(max_radius),) * 3)
