"""Intensity refinement of an affine: the key-point start, then the precision of intensities.

After RANSAC (:mod:`bigstream_core.global_affine`) the affine is as good as the key points'
positions. This module refines it by maximising a normalised cross-correlation between the
fixed image and the moving image under the affine, on a multi-resolution pyramid, with a
sampled metric so it stays fast:

- Level images: the image smoothed by a Gaussian of ``shrink / 2`` voxels (anti-aliasing)
  and ``level_sigmas`` more voxels of the level, then every ``shrink``-th voxel kept (so
  level voxel ``i`` sits at ``origin + i * shrink * spacing``).
- Samples: at most ``samples`` fixed voxels of the level, drawn once per level with the
  seed, inside the fixed mask and mapping inside the moving image (and its mask) under the
  start of the level; for the local NCC whole cubes, the more contrast the likelier. The
  moving image is interpolated linearly at their images, with the interpolant's exact
  gradient.
- Gain (``fit_gain``): the moving values are divided by a smooth illumination gain,
  ``exp`` of a linear function of position (3 parameters, see :class:`_Gain`), fitted with
  the affine at the first level and then held. Another imaging round's illumination
  gradient multiplies each cell by a slope, which moves its intensity centre; a local NCC
  alone then prefers a slightly shifted affine (measured on phantom pairs with a ±25 %
  gradient: 0.023-0.025 µm from the truth; with the gain fitted 0.012-0.014 µm).
- Metric: ``"lncc"``: the NCC computed in each cube of ``region_voxels`` level voxels and
  averaged, each cube weighted by its samples times its fixed contrast (robust to gain
  changes across the volume and to gamma); ``"ncc"``: one NCC over all samples (robust to
  one gain and offset only).
- Parameters: 12 numbers, ``y = A0 (x + v (B (x - c) / s + t))``, with ``c`` the samples'
  centre, ``s`` their RMS distance from it and ``v`` the level's voxel size (µm), so a unit
  change of any of the 9 of ``B`` or the 3 of ``t`` moves points by about a voxel;
  maximised with L-BFGS-B (scipy) from ``B = t = 0`` at each level.

The result is never worse than the start: at the finest level the metric of the refined and
the initial affine are compared on the same samples and the initial one is kept unless the
refined one is higher (the report says which). Axis order z, y, x; positions and matrices in
µm; the affine maps fixed points to moving points (``aligned(x) = moving(A x)``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, optimize

from bigstream_core.interpolation import linear_with_gradient
from bigstream_core.io import Image

METRICS = ("lncc", "ncc")
FTOL = 1e-7  # a level stops when an iteration gains less than this relative metric (measured:
# 2x fewer iterations than 1e-12, the same affine to 0.001 µm on the test pairs)
MIN_SAMPLES = 100  # a level with fewer usable fixed voxels is skipped (the finest: an error)
MIN_REGION_SAMPLES = 8  # a region with fewer samples is left out of the local NCC
GAIN_STEP = 0.1  # log gain change, centre to corner, per unit gain parameter


@dataclass(frozen=True)
class RefineParams:
    """How the refinement runs (the ``refine`` block of ``global_affine`` / ``local_affine``).

    Attributes:
        metric: ``"lncc"`` (NCC per cube of ``region_voxels``, averaged) or ``"ncc"`` (global).
        shrink_factors: pyramid levels, coarse to fine, as subsampling factors of the image.
        level_sigmas: Gaussian smoothing per level, in voxels of the level (one per level).
        iterations: at most this many L-BFGS-B iterations per level.
        samples: at most this many fixed voxels per level (all of them when fewer).
        region_voxels: edge of a local NCC cube, voxels of the level.
        fit_gain: fit a smooth gain of the moving image (an illumination gradient) with the
            affine at the first level, and hold it at the others.
    """

    metric: str = "lncc"
    shrink_factors: tuple[int, ...] = (4, 1)
    level_sigmas: tuple[float, ...] = (1.0, 0.5)
    iterations: int = 50
    samples: int = 100_000
    region_voxels: int = 4
    fit_gain: bool = True

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"refine metric {self.metric!r}: expected one of {METRICS}")
        if len(self.shrink_factors) != len(self.level_sigmas) or not self.shrink_factors:
            raise ValueError(
                f"refine shrink_factors {list(self.shrink_factors)} and level_sigmas "
                f"{list(self.level_sigmas)}: expected one sigma per level, at least one level"
            )
        if min(self.shrink_factors) < 1 or self.iterations < 1 or self.samples < 100:
            raise ValueError(
                "refine: shrink factors and iterations must be >= 1 and samples >= 100, got "
                f"{list(self.shrink_factors)}, {self.iterations}, {self.samples}"
            )

    @classmethod
    def from_config(cls, block: dict) -> RefineParams:
        """From a config ``refine`` block (its ``enabled`` ignored; a key that is no field
        raises TypeError)."""
        values = {name: value for name, value in block.items() if name != "enabled"}
        for name in ("shrink_factors", "level_sigmas"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


@dataclass
class _Level:
    """One pyramid level of an image: smoothed float32 voxels, their spacing and origin."""

    data: np.ndarray
    spacing: np.ndarray
    origin: np.ndarray

    def voxels(self, points: np.ndarray) -> np.ndarray:
        """Level voxel coordinates (3, N) of physical points (N, 3) µm."""
        return ((points - self.origin) / self.spacing).T

    def positions(self, voxels: np.ndarray) -> np.ndarray:
        """Physical positions (N, 3) µm of level voxel indices (N, 3)."""
        return voxels * self.spacing + self.origin


def _level(data: np.ndarray, image: Image, shrink: int, sigma: float) -> _Level:
    """``data`` (the image's voxels) smoothed and subsampled for one pyramid level."""
    width = np.hypot(shrink / 2 if shrink > 1 else 0.0, sigma * shrink)
    smoothed = ndimage.gaussian_filter(data.astype(np.float32), width, mode="nearest")
    step = (slice(None, None, shrink),) * 3
    return _Level(
        np.ascontiguousarray(smoothed[step]),
        np.asarray(image.spacing, dtype=float) * shrink,
        np.asarray(image.origin, dtype=float),
    )


def _mask_at(mask: np.ndarray | None, image: Image, points: np.ndarray) -> np.ndarray:
    """Whether each point (N, 3) µm lies in ``mask`` (on ``image``'s grid; None: all do)."""
    if mask is None:
        return np.ones(len(points), dtype=bool)
    index = np.rint((points - np.asarray(image.origin)) / np.asarray(image.spacing)).astype(int)
    inside = np.all((index >= 0) & (index < np.asarray(mask.shape)), axis=1)
    found = np.zeros(len(points), dtype=bool)
    found[inside] = mask[tuple(index[inside].T)]
    return found


@dataclass(frozen=True)
class _Gain:
    """A smooth multiplicative gain of the moving image over the fixed box:
    ``exp(GAIN_STEP q . (x - centre) / radius)`` at fixed position ``x`` (µm, z y x), ``q``
    its 3 parameters; ``centre`` and ``radius`` are the box's centre and half diagonal, so a
    unit of ``q`` changes the gain by about ``GAIN_STEP`` from the centre to a corner."""

    centre: np.ndarray
    radius: float

    @classmethod
    def of_box(cls, image: Image) -> _Gain:
        half = (np.asarray(image.shape) - 1) * np.asarray(image.spacing, dtype=float) / 2
        return cls(np.asarray(image.origin, dtype=float) + half, float(np.linalg.norm(half)) or 1.0)

    def terms(self, points: np.ndarray) -> np.ndarray:
        """The log gain's derivatives in ``q`` at points (N, 3) µm: (N, 3)."""
        return GAIN_STEP * (points - self.centre) / self.radius

    def span(self, image: Image, q: np.ndarray) -> list[float]:
        """The log gain's [min, max] over the corners of ``image``'s box."""
        corners = np.array(np.meshgrid(*([0, 1],) * 3, indexing="ij")).reshape(3, -1).T
        extent = (np.asarray(image.shape) - 1) * np.asarray(image.spacing, dtype=float)
        values = self.terms(np.asarray(image.origin, dtype=float) + corners * extent) @ q
        return [round(float(values.min()), 4), round(float(values.max()), 4)]


class _Objective:
    """The sampled metric of one level and its gradient in the 12 affine parameters, plus
    the 3 gain parameters when ``fit_gain`` (else the gain ``q`` is held)."""

    def __init__(self, moving: _Level, points, values, regions, start, gain=None, q=None,
                 fit_gain=False):  # fmt: skip
        keep = np.bincount(regions)[regions] >= MIN_REGION_SAMPLES
        self.moving = moving
        self.start = start
        self.step = float(np.mean(moving.spacing))  # µm moved by a unit parameter
        self.points = points[keep]
        self.values = values[keep].astype(np.float64)
        self.centre = self.points.mean(axis=0)
        self.offsets = self.points - self.centre
        self.scale = float(np.sqrt((self.offsets**2).sum(axis=1).mean())) or 1.0
        _, self.regions = np.unique(regions[keep], return_inverse=True)
        self.counts = np.bincount(self.regions).astype(np.float64)
        self.fixed_centred = self.values - self._mean(self.values)[self.regions]
        self.fixed_std = np.sqrt(self._mean(self.fixed_centred**2))
        # a region counts by its samples times its fixed contrast: flat background regions,
        # where the NCC is noise against noise, weigh little
        self.weights = self.counts * self.fixed_std
        self.terms = gain.terms(self.points) if gain else None
        self.q, self.fit_gain = q, fit_gain
        self.evaluations = 0

    def _mean(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.regions, weights=values) / self.counts

    def affine(self, p: np.ndarray) -> np.ndarray:
        """The 4x4 affine of parameters ``p`` (B row-major, then t)."""
        update = np.eye(4)
        b = p[:9].reshape(3, 3) * (self.step / self.scale)
        update[:3, :3] += b
        update[:3, 3] = self.step * p[9:12] - b @ self.centre
        return self.start @ update

    def hold_gain(self, q: np.ndarray) -> None:
        """From now on, evaluate with the gain ``q`` held (12 parameters)."""
        self.q, self.fit_gain = q, False

    def _region_ncc(self, m: np.ndarray):
        """Each region's NCC of the fixed samples with the moving values ``m`` (N,), and
        what its gradient needs: the centred ``m``, its std per region, which regions have
        contrast in both images, and their safe denominators."""
        m_centred = m - self._mean(m)[self.regions]
        m_std = np.sqrt(self._mean(m_centred**2))
        denominator = self.fixed_std * m_std
        valid = denominator > 1e-9 * max(float(self.fixed_std.max()), 1e-30)
        safe = np.where(valid, denominator, 1.0)
        ncc = np.where(valid, self._mean(self.fixed_centred * m_centred) / safe, 0.0)
        return ncc, m_centred, m_std, valid, safe

    def region_scores(self, matrix: np.ndarray) -> np.ndarray:
        """Each region's NCC under the affine ``matrix`` (4x4), with the gain held."""
        voxels = self.moving.voxels(self.points @ matrix[:3, :3].T + matrix[:3, 3])
        m, _ = linear_with_gradient(self.moving.data, voxels)
        if self.terms is not None and self.q is not None:
            m *= np.exp(-self.terms @ self.q)
        return self._region_ncc(m)[0]

    def __call__(self, p: np.ndarray) -> tuple[float, np.ndarray]:
        """Minus the metric at ``p``, and its gradient."""
        self.evaluations += 1
        matrix = self.affine(p)
        voxels = self.moving.voxels(self.points @ matrix[:3, :3].T + matrix[:3, 3])
        m, gradient = linear_with_gradient(self.moving.data, voxels)
        gradient /= self.moving.spacing
        if self.terms is not None:  # the moving values divided by the gain
            correction = np.exp(-self.terms @ (p[12:] if self.fit_gain else self.q))
            m *= correction
            gradient *= correction[:, None]
        ncc, m_centred, m_std, valid, safe = self._region_ncc(m)
        total = self.weights.sum()
        metric = float((ncc * self.weights).sum() / total)
        # d ncc_r / d m_n = [f_n / (sf sm) - ncc * m_n / sm^2] / n_r   (centred values)
        share = self.weights / self.counts / total
        scale_f = np.where(valid, share / safe, 0.0)[self.regions]
        scale_m = np.where(valid, share * ncc / np.where(valid, m_std, 1.0) ** 2, 0.0)
        d_m = self.fixed_centred * scale_f - m_centred * scale_m[self.regions]
        # d metric / d u for the update u(x) = x + step (B (x - c) / scale + t)
        h = (gradient * d_m[:, None]) @ self.start[:3, :3]
        d_p = self.step * np.concatenate([(h.T @ self.offsets).ravel() / self.scale, h.sum(axis=0)])
        if self.fit_gain:  # d m_n / d q = -m_n terms_n
            d_p = np.concatenate([d_p, -self.terms.T @ (d_m * m)])
        return -metric, -d_p


def _samples(fixed: _Level, moving: _Level, start, masks, images, params, seed: int):
    """Fixed level voxels (positions µm, values, region ids) used at one level.

    Usable voxels: inside the fixed mask, mapping inside the moving image (a voxel from its
    edge) and its mask under ``start``; checked one z plane of the level at a time, keeping
    4 or 8 bytes per usable voxel. For ``"lncc"`` whole cubes of ``region_voxels`` are
    drawn until ``samples`` voxels are in, so each cube's NCC uses all its usable voxels; a
    cube is drawn with a probability proportional to its fixed contrast (the standard
    deviation of its usable fixed values), so flat background, which tells nothing about
    the alignment, is rarely drawn (measured on the S another-round pair: 0.008 µm from the
    truth, 0.02-0.03 µm with cubes drawn uniformly). For ``"ncc"`` single voxels are drawn
    uniformly (all in one region). The draws use ``seed``."""
    fixed_mask, moving_mask = masks
    shape = fixed.data.shape
    plane = np.indices(shape[1:]).reshape(2, -1).T
    cubes = np.array(shape) // params.region_voxels + 1
    plane_cube = (plane[:, 0] // params.region_voxels) * cubes[2] + plane[
        :, 1
    ] // params.region_voxels
    high = np.array(moving.data.shape) - 2.0
    index_type = np.int32 if fixed.data.size < 2**31 else np.int64
    kept, kept_cubes = [], []
    moments = np.zeros((2, int(np.prod(cubes))))  # per cube: sum and sum of squares
    for z in range(shape[0]):
        points = fixed.positions(np.column_stack([np.full(len(plane), z), plane]))
        keep = _mask_at(fixed_mask, images[0], points)
        mapped = points @ start[:3, :3].T + start[:3, 3]
        voxels = moving.voxels(mapped).T
        keep &= np.all((voxels >= 1) & (voxels <= high), axis=1)
        keep &= _mask_at(moving_mask, images[1], mapped)
        inside = np.flatnonzero(keep)
        kept.append((inside + z * len(plane)).astype(index_type))
        ids = plane_cube[inside] + (z // params.region_voxels) * cubes[1] * cubes[2]
        kept_cubes.append(ids)
        values = fixed.data[z].reshape(-1)[inside].astype(np.float64)
        for power in (1, 2):
            moments[power - 1] += np.bincount(ids, values**power, minlength=moments.shape[1])
    chosen = np.concatenate(kept)
    regions = np.concatenate(kept_cubes)
    rng = np.random.default_rng(seed)
    if params.metric == "ncc":
        regions = np.zeros(len(chosen), dtype=np.int64)
        if len(chosen) > params.samples:
            pick = np.sort(rng.choice(len(chosen), params.samples, replace=False))
            chosen, regions = chosen[pick], regions[pick]
    elif len(chosen) > params.samples:
        pick = _contrast_draw(regions, moments, params.samples, rng)[regions]
        chosen, regions = chosen[pick], regions[pick]
    voxels = np.column_stack(np.unravel_index(chosen, shape))
    return fixed.positions(voxels), fixed.data.reshape(-1)[chosen], regions


def _contrast_draw(regions: np.ndarray, moments: np.ndarray, samples: int, rng) -> np.ndarray:
    """Which cubes are drawn (boolean per cube id): without replacement, each with a
    probability proportional to its contrast (weighted keys ``log(u) / contrast``, the
    largest first: Efraimidis and Spirakis 2006), until ``samples`` voxels are in."""
    sizes = np.bincount(regions, minlength=moments.shape[1])
    present = np.flatnonzero(sizes)
    mean = moments[0, present] / sizes[present]
    contrast = np.sqrt(np.maximum(moments[1, present] / sizes[present] - mean**2, 0.0))
    with np.errstate(divide="ignore"):  # no contrast: key -inf, drawn last
        keys = np.log(rng.random(len(present))) / contrast
    order = present[np.argsort(-keys, kind="stable")]
    taken = np.zeros(len(sizes), dtype=bool)
    taken[order[: np.searchsorted(np.cumsum(sizes[order]), samples) + 1]] = True
    return taken


class RefineError(ValueError):
    """The refinement cannot run: too few usable samples (the message says how many)."""


def refine_by_intensity(
    fixed: Image,
    moving: Image,
    initial_affine: np.ndarray,
    params: RefineParams = RefineParams(),
    fixed_mask: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """The affine refined by intensities, and a report.

    Args:
        fixed, moving: the images (read whole: use a low-res level or a tile).
        initial_affine: 4x4, fixed -> moving, µm, z y x (the RANSAC result).
        params: see :class:`RefineParams`.
        fixed_mask, moving_mask: boolean arrays on the images' own voxel grids (or None);
            the metric uses only fixed samples inside the fixed mask that map inside the
            moving mask.
        seed: the samples' random draw.

    Returns ``(affine, report)``; the report has ``metric_before``/``metric_after`` (the
    finest level's metric, -1..1, on the same samples), ``status`` (``"refined"`` or
    ``"kept the initial affine: ..."``), per-level iterations and evaluations, ``samples`` and
    ``time_s``. A coarse level with fewer than ``MIN_SAMPLES`` usable voxels is skipped;
    :class:`RefineError` when the finest has too few.
    """
    started = time.perf_counter()
    initial = np.asarray(initial_affine, dtype=float)
    data = (fixed.read((slice(None),) * 3), moving.read((slice(None),) * 3))
    gain = _Gain.of_box(fixed) if params.fit_gain else None
    q = np.zeros(3)  # the gain's parameters: fitted at the first level that runs, then held
    current, levels, finest = initial, [], None
    for index, (shrink, sigma) in enumerate(
        zip(params.shrink_factors, params.level_sigmas, strict=True)
    ):
        fixed_level = _level(data[0], fixed, shrink, sigma)
        moving_level = _level(data[1], moving, shrink, sigma)
        points, values, regions = _samples(
            fixed_level, moving_level, current, (fixed_mask, moving_mask), (fixed, moving),
            params, seed + index,
        )  # fmt: skip
        if len(points) < MIN_SAMPLES:
            if index + 1 < len(params.shrink_factors):
                levels.append({"shrink": shrink, "samples": int(len(points)), "skipped": True})
                continue
            raise RefineError(
                f"level shrink {shrink}: {len(points)} fixed voxels inside the mask map inside "
                f"the moving image; at least {MIN_SAMPLES} are needed"
            )
        fit_gain = gain is not None and finest is None
        objective = _Objective(moving_level, points, values, regions, current, gain, q, fit_gain)
        result = optimize.minimize(
            objective, np.zeros(15 if fit_gain else 12), jac=True, method="L-BFGS-B",
            options={"maxiter": params.iterations, "gtol": 1e-8, "ftol": FTOL},
        )  # fmt: skip
        current = objective.affine(result.x)
        if fit_gain:
            q = result.x[12:]
            objective.hold_gain(q)
        levels.append(
            {"shrink": shrink, "samples": int(len(objective.values)),
             "iterations": int(result.nit), "evaluations": objective.evaluations,
             "metric": round(-float(result.fun), 6)}
        )  # fmt: skip
        finest = objective
    # both affines judged on the finest level's samples, with the same gain
    before = -finest(_parameters_of(finest, initial))[0]
    after = -finest(_parameters_of(finest, current))[0]
    report = {
        "metric": params.metric,
        "metric_before": round(float(before), 6),
        "metric_after": round(float(after), 6),
        "levels": levels,
        "time_s": round(time.perf_counter() - started, 3),
    }
    if gain is not None:
        report["log_gain"] = gain.span(fixed, q)
    if not after > before:
        report["status"] = "kept the initial affine: the metric did not improve"
        return initial, report
    report["status"] = "refined"
    return current, report


def compare_affines(
    fixed: Image,
    moving: Image,
    candidates: list[np.ndarray],
    params: RefineParams = RefineParams(),
    fixed_mask: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The refinement's metric for each of ``candidates`` (4x4 affines, fixed -> moving,
    µm), judged on one set of samples: those of the finest level of ``params``, drawn as
    the refinement draws them under the first candidate (inside the masks, on the images'
    own grids). No gain is fitted: a local NCC cube is 4 voxels across, and a smooth
    illumination gain barely changes inside one.

    Returns ``(scores, weights)``: each candidate's NCC per cube, shape (candidates, cubes),
    and each cube's weight (its samples times its fixed contrast), so that the metric of
    candidate ``c`` is ``scores[c] @ weights / weights.sum()`` and the spread of the
    per-cube differences between two candidates says whether one beats the other beyond
    the noise. Raises :class:`RefineError` with too few usable samples.
    """
    data = (fixed.read((slice(None),) * 3), moving.read((slice(None),) * 3))
    shrink, sigma = params.shrink_factors[-1], params.level_sigmas[-1]
    fixed_level = _level(data[0], fixed, shrink, sigma)
    moving_level = _level(data[1], moving, shrink, sigma)
    start = np.asarray(candidates[0], dtype=float)
    points, values, regions = _samples(
        fixed_level, moving_level, start, (fixed_mask, moving_mask), (fixed, moving), params, seed
    )
    if len(points) < MIN_SAMPLES:
        raise RefineError(
            f"{len(points)} fixed voxels inside the mask map inside the moving image; at least "
            f"{MIN_SAMPLES} are needed to compare affines"
        )
    objective = _Objective(moving_level, points, values, regions, start)
    scores = np.array([objective.region_scores(np.asarray(c, dtype=float)) for c in candidates])
    return scores, objective.weights


def _parameters_of(objective: _Objective, matrix: np.ndarray) -> np.ndarray:
    """The parameters at which ``objective`` (started elsewhere) gives ``matrix``."""
    update = np.linalg.solve(objective.start, matrix)
    b = update[:3, :3] - np.eye(3)
    t = (update[:3, 3] + b @ objective.centre) / objective.step
    return np.concatenate([(b * (objective.scale / objective.step)).ravel(), t])
