"""Intensity refinement of an affine: the key-point start, then the precision of intensities.

After RANSAC (:mod:`bigstream_core.global_affine`) the affine is as good as the key points'
positions. This module refines it by maximising a normalised cross-correlation between the
fixed image and the moving image under the affine, on a multi-resolution pyramid, with a
sampled metric so it stays fast:

- Level images: the image smoothed by a Gaussian of ``shrink / 2`` voxels (anti-aliasing)
  and ``level_sigmas`` more voxels of the level, then every ``shrink``-th voxel kept (so
  level voxel ``i`` sits at ``origin + i * shrink * spacing``); never made whole: each
  window is read with the Gaussian's support around it and smoothed alone, which gives the
  whole level's values. NaN or infinite voxels (holes) are left out of the smoothing.
- Samples: at most ``samples`` fixed voxels of the level, drawn once per level with the
  seed, inside the fixed mask and mapping inside the moving image (and its mask) under the
  start of the level, none on a hole; for the local NCC whole cubes, the more contrast the
  likelier, from a pool of random blocks of cubes (:func:`_samples`). The moving image is
  read in one window per block, where the optimiser can move the block's samples, and
  interpolated linearly there, with the interpolant's exact gradient. Memory and reads
  follow ``samples``, not the images' size.
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
  maximised with L-BFGS-B (scipy) from ``B = t = 0`` at each level, within bounds that keep
  every sample in its moving window (``MARGIN`` level voxels); an optimum on a bound starts
  a new round from there with new windows (``ROUNDS`` at most).

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
BLOCK_CUBES = 4  # edge of a block of samples read at once, in local NCC cubes
POOL = 4  # blocks are read until this many times `samples` usable voxels are in; the contrast
# draw picks among them
MAX_TRIES = 4  # at most this many times the blocks the pool needs are read per level and round
MARGIN = 4  # level voxels: the most the optimiser moves a sample in one round (its window's
# margin); an optimum on that bound starts another round with new windows
ROUNDS = 4  # rounds per level at most
CANDIDATES = 64  # blocks drawn per block read at most (those outside the masks are passed over)


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


@dataclass(frozen=True)
class _Grid:
    """One pyramid level of an image, read by windows: level voxel ``i`` (z, y, x) is image
    voxel ``i * shrink`` of the image smoothed by a Gaussian of ``width`` image voxels (the
    anti-aliasing ``shrink / 2`` and the level's ``sigma * shrink`` together), so it sits at
    ``origin + i * shrink * spacing`` µm."""

    image: Image
    shrink: int
    width: float

    @classmethod
    def of(cls, image: Image, shrink: int, sigma: float) -> _Grid:
        return cls(
            image, shrink, float(np.hypot(shrink / 2 if shrink > 1 else 0.0, sigma * shrink))
        )

    @property
    def shape(self) -> np.ndarray:
        """Level voxels along z, y, x."""
        return -(-np.asarray(self.image.shape) // self.shrink)

    @property
    def spacing(self) -> np.ndarray:
        return np.asarray(self.image.spacing, dtype=float) * self.shrink

    @property
    def origin(self) -> np.ndarray:
        return np.asarray(self.image.origin, dtype=float)

    @property
    def halo(self) -> int:
        """Image voxels the smoothing reaches (scipy's Gaussian support, 4 sigma)."""
        return int(4.0 * self.width + 0.5)

    def voxels(self, points: np.ndarray) -> np.ndarray:
        """Level voxel coordinates (3, N) of physical points (N, 3) µm."""
        return ((points - self.origin) / self.spacing).T

    def positions(self, voxels: np.ndarray) -> np.ndarray:
        """Physical positions (N, 3) µm of level voxel indices (N, 3)."""
        return voxels * self.spacing + self.origin

    def read(self, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Level voxels ``[low, high)`` (level indices, within the level): float32 values, as
        smoothing the whole image gives them (the image read with the smoothing's halo, its
        edges continued as ``mode="nearest"`` continues the image's), and where NaN or
        infinite image voxels dominate (bool). Holes are left out of the smoothing (the
        valid voxels' Gaussian average: the smoothed data over the smoothed valid share); a
        level voxel whose Gaussian weight is less than half on valid voxels is a hole."""
        shape = np.asarray(self.image.shape)
        first = np.maximum(low * self.shrink - self.halo, 0)
        last = np.minimum((high - 1) * self.shrink + self.halo + 1, shape)
        data, holes = self.image.read_with_holes(
            tuple(slice(int(a), int(b)) for a, b in zip(first, last, strict=True))
        )
        pick = tuple(
            slice(int(a * self.shrink - f), int((b - 1) * self.shrink - f + 1), self.shrink)
            for a, b, f in zip(low, high, first, strict=True)
        )
        smoothed = ndimage.gaussian_filter(data.astype(np.float32), self.width, mode="nearest")
        if holes is None:
            return np.ascontiguousarray(smoothed[pick]), np.zeros(tuple(high - low), dtype=bool)
        weight = ndimage.gaussian_filter((~holes).astype(np.float32), self.width, mode="nearest")
        weight = weight[pick]
        # no valid voxel within the Gaussian's support: 0 (such a voxel is a hole)
        values = np.where(weight > 1e-6, smoothed[pick] / np.maximum(weight, 1e-6), 0.0)
        return values.astype(np.float32), weight < 0.5


def _mask_at(mask: np.ndarray | None, image: Image, points: np.ndarray) -> np.ndarray:
    """Whether each point (N, 3) µm lies in ``mask`` (on ``image``'s grid; None: all do);
    reads only the box of the mask the points' nearest voxels span."""
    if mask is None:
        return np.ones(len(points), dtype=bool)
    index = np.rint((points - np.asarray(image.origin)) / np.asarray(image.spacing)).astype(int)
    inside = np.all((index >= 0) & (index < np.asarray(mask.shape)), axis=1)
    found = np.zeros(len(points), dtype=bool)
    if inside.any():
        low, high = index[inside].min(axis=0), index[inside].max(axis=0) + 1
        window = np.asarray(mask[tuple(slice(a, b) for a, b in zip(low, high, strict=True))])
        found[inside] = window[tuple((index[inside] - low).T)] != 0
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

    def __init__(self, samples: _Samples, start, gain=None, q=None, fit_gain=False):
        regions = samples.regions
        keep = np.bincount(regions)[regions] >= MIN_REGION_SAMPLES
        self.moving = samples.windows.subset(keep)
        self.start = start
        self.step = float(np.mean(self.moving.grid.spacing))  # µm moved by a unit parameter
        self.points = samples.points[keep]
        self.values = samples.values[keep].astype(np.float64)
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

    def bounds(self, margin: int, parameters: int) -> list[tuple[float | None, float | None]]:
        """Box bounds of the parameters (L-BFGS-B's, which it never leaves) that keep every
        sample within ``margin`` level voxels of the moving image, along each axis, of where
        ``start`` maps it: a sample ``x`` moves by ``start[:3, :3] step (B d + t)`` µm with
        ``d = (x - centre) / scale``, at most ``sum_i |start[k, i]| step (b |d|_1 + tau)`` µm
        along moving axis ``k`` when ``|B_ij| <= b`` and ``|t_i| <= tau``; ``b |d|_1`` and
        ``tau`` each get half. The gain's parameters are free."""
        reach = np.abs(self.start[:3, :3]).sum(axis=1) / self.moving.grid.spacing
        total = margin / (self.step * float(reach.max()))
        spread = float(np.abs(self.offsets).sum(axis=1).max()) / self.scale or 1.0
        limits = [total / 2 / spread] * 9 + [total / 2] * 3
        return [(-v, v) for v in limits] + [(None, None)] * (parameters - 12)

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
        m, _ = self.moving.interpolate(self.points @ matrix[:3, :3].T + matrix[:3, 3])
        if self.terms is not None and self.q is not None:
            m *= np.exp(-self.terms @ self.q)
        return self._region_ncc(m)[0]

    def __call__(self, p: np.ndarray) -> tuple[float, np.ndarray]:
        """Minus the metric at ``p``, and its gradient."""
        self.evaluations += 1
        matrix = self.affine(p)
        m, gradient = self.moving.interpolate(self.points @ matrix[:3, :3].T + matrix[:3, 3])
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


class _Windows:
    """The moving level where the samples can reach: one float32 window of level voxels per
    block of samples, window ``w`` holding level voxels ``lows[w]`` onwards (z, y, x), and
    ``ids``, the window each sample uses. The windows are stacked along z in one array
    (``stack``), each padded by its edge voxels to a common box one voxel larger than the
    largest, so that all samples are interpolated in one call (measured: 3x faster than a
    call per window on the small pairs) and none reads another window."""

    def __init__(self, grid: _Grid, arrays: list, lows: list, ids: np.ndarray):
        self.grid, self.ids = grid, ids
        box = np.max([a.shape for a in arrays], axis=0) + 1 if arrays else np.ones(3, int)
        self.stack = np.empty((len(arrays) * box[0], box[1], box[2]), dtype=np.float32)
        for w, array in enumerate(arrays):
            pad = [(0, int(n - m)) for n, m in zip(box, array.shape, strict=True)]
            self.stack[w * box[0] : (w + 1) * box[0]] = np.pad(array, pad, mode="edge")
        self.lows = np.array(lows, dtype=float).reshape(-1, 3)
        self.last = np.array([a.shape for a in arrays], dtype=float).reshape(-1, 3) - 1
        self.box = box

    def subset(self, keep: np.ndarray) -> _Windows:
        """The same windows for the samples where ``keep`` (bool) is True."""
        windows = object.__new__(_Windows)
        windows.__dict__.update(self.__dict__, ids=self.ids[keep])
        return windows

    def interpolate(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Linear values (N,) of the moving level at the samples' positions ``points`` (N, 3)
        µm, and their gradient (N, 3) per µm."""
        voxels = self.grid.voxels(points) - self.lows[self.ids].T
        # a sample beyond its window (only where the window ends at the image's edge) takes
        # the edge's value: never another window's
        np.clip(voxels, 0, self.last[self.ids].T, out=voxels)
        voxels[0] += self.ids * self.box[0]
        values, gradient = linear_with_gradient(self.stack, voxels)
        return values, gradient / self.grid.spacing


@dataclass
class _Samples:
    """Fixed samples of one level: positions (N, 3) µm, values (N,), local NCC cube ids (N,),
    the moving windows they reach, and how many blocks were read."""

    points: np.ndarray
    values: np.ndarray
    regions: np.ndarray
    windows: _Windows
    blocks: int


def _block_order(grid: _Grid, params: RefineParams, rng) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of the level (edge ``BLOCK_CUBES`` local NCC cubes) in the order they are
    tried: all of them, shuffled, when there are at most ``CANDIDATES`` times
    :func:`blocks_tried`; else that many drawn without replacement (blocks outside the
    masks or the moving image are passed over without reading the image, so more are
    drawn than read). Returns the block grid's shape and the block indices."""
    edge = BLOCK_CUBES * params.region_voxels
    grid_shape = -(-grid.shape // edge)
    count = int(np.prod(grid_shape))
    return grid_shape, rng.choice(
        count, min(count, CANDIDATES * blocks_tried(params)), replace=False
    )


def blocks_tried(params: RefineParams) -> int:
    """Sample blocks a level reads at most per image (each with its windows): enough for
    ``POOL`` times ``samples`` voxels ``MAX_TRIES`` times over."""
    edge = BLOCK_CUBES * params.region_voxels
    return MAX_TRIES * -(-POOL * params.samples // edge**3)


def _samples(fixed: _Grid, moving: _Grid, start, cover, masks, params, seed: int, margin: int):
    """The fixed samples of one level (:class:`_Samples`), read block by block.

    Blocks of ``BLOCK_CUBES`` cubes of ``region_voxels`` are read in a random order (the
    ``seed``) until ``POOL`` times ``samples`` usable voxels are in or
    :func:`blocks_tried` blocks are read. Usable voxels: inside the fixed mask, no hole,
    mapping inside the moving image (a voxel from its edge) and its mask under ``start``,
    and no moving hole within a level voxel of where any affine of ``cover`` (4x4 each,
    ``start`` among them) maps them; holes are left out of both levels' smoothing
    (:meth:`_Grid.read`), so a sample the optimiser moves near one meets the valid voxels'
    average around it, never the hole's zeros. Each block's moving window spans where the
    affines of ``cover`` map its usable voxels, ``margin + 2`` level voxels more on every
    side (the optimiser moves no sample further than ``margin``; see
    :meth:`_Objective.bounds`). For ``"lncc"`` whole cubes are then drawn from these until
    ``samples`` voxels are in, each with a probability proportional to its fixed contrast
    (the standard deviation of its usable fixed values), so flat background, which tells
    nothing about the alignment, is rarely drawn (measured on the S another-round pair:
    0.008 µm from the truth, 0.02-0.03 µm with cubes drawn uniformly). For ``"ncc"``
    single voxels are drawn uniformly (all in one region). Memory: the pool and its
    windows, whatever the level's size."""
    fixed_mask, moving_mask = masks
    rng = np.random.default_rng(seed)
    edge = BLOCK_CUBES * params.region_voxels
    grid_shape, order = _block_order(fixed, params, rng)
    cubes = -(-fixed.shape // params.region_voxels)
    high = moving.shape - 2.0
    reach = margin + 2
    parts, arrays, lows, tried, pooled = [], [], [], 0, 0
    for block in order:
        if pooled >= POOL * params.samples or tried == blocks_tried(params):
            break
        low = np.array(np.unravel_index(block, grid_shape)) * edge
        top = np.minimum(low + edge, fixed.shape)
        voxels = np.indices(top - low).reshape(3, -1).T + low
        points = fixed.positions(voxels)
        keep = _mask_at(fixed_mask, fixed.image, points)
        mapped = points @ start[:3, :3].T + start[:3, 3]
        inside = moving.voxels(mapped).T
        keep &= np.all((inside >= 1) & (inside <= high), axis=1)
        keep &= _mask_at(moving_mask, moving.image, mapped)
        if not keep.any():
            continue  # passed over: the image is not read
        tried += 1
        values, holes = fixed.read(low, top)
        keep &= ~holes.reshape(-1)
        if not keep.any():
            continue
        reached = np.stack([moving.voxels(points[keep] @ a[:3, :3].T + a[:3, 3]).T for a in cover])
        window_low = np.maximum(np.floor(reached.min(axis=(0, 1))).astype(int) - reach, 0)
        window_high = np.minimum(np.ceil(reached.max(axis=(0, 1))).astype(int) + reach + 1,
                                 moving.shape)  # fmt: skip
        window, moving_holes = moving.read(window_low, window_high)
        if moving_holes.any():  # no sample starts on a moving hole
            near = ndimage.maximum_filter(moving_holes, size=3, mode="constant")
            nearest = np.rint(reached - window_low).astype(int)
            nearest = np.clip(nearest, 0, np.array(window.shape) - 1)
            clear = ~near[tuple(np.moveaxis(nearest, -1, 0))].any(axis=0)
            keep[np.flatnonzero(keep)[~clear]] = False
        if not keep.any():
            continue
        ids = np.ravel_multi_index(tuple((voxels[keep] // params.region_voxels).T), cubes)
        parts.append(
            (points[keep], values.reshape(-1)[keep], ids, np.full(keep.sum(), len(arrays)))
        )
        arrays.append(window)
        lows.append(window_low)
        pooled += int(keep.sum())
    if not parts:
        empty = np.zeros((0, 3))
        return _Samples(
            empty, np.zeros(0), np.zeros(0, int), _Windows(moving, [], [], np.zeros(0, int)), tried
        )
    points, values, cube_ids, window_ids = (
        np.concatenate(part) for part in zip(*parts, strict=True)
    )
    _, regions = np.unique(cube_ids, return_inverse=True)
    if params.metric == "ncc":
        regions = np.zeros(len(points), dtype=np.int64)
        pick = np.zeros(len(points), dtype=bool)
        pick[rng.choice(len(points), min(len(points), params.samples), replace=False)] = True
    else:
        values64 = values.astype(np.float64)
        moments = np.stack([np.bincount(regions, values64**p) for p in (1, 2)])
        pick = _contrast_draw(regions, moments, params.samples, rng)[regions]
    used, window_ids = np.unique(window_ids[pick], return_inverse=True)
    windows = _Windows(moving, [arrays[w] for w in used], [lows[w] for w in used], window_ids)
    return _Samples(points[pick], values[pick], regions[pick], windows, tried)


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
        fixed, moving: the images (read by windows around the samples, never whole).
        initial_affine: 4x4, fixed -> moving, µm, z y x (the RANSAC result).
        params: see :class:`RefineParams`.
        fixed_mask, moving_mask: boolean arrays on the images' own voxel grids (or None;
            memory-mapped ones are read by windows too); the metric uses only fixed samples
            inside the fixed mask that map inside the moving mask.
        seed: the samples' random draw.

    Each level runs in rounds: samples and their moving windows under the round's start,
    then L-BFGS-B within bounds that keep every sample inside its window
    (:meth:`_Objective.bounds`, ``MARGIN`` level voxels); an optimum on a bound starts
    another round from it (new windows), at most ``ROUNDS`` per level.

    Returns ``(affine, report)``; the report has ``metric_before``/``metric_after`` (the
    finest level's metric, -1..1, on the same samples), ``status`` (``"refined"`` or
    ``"kept the initial affine: ..."``), per level the iterations, evaluations, samples,
    blocks read and rounds, and ``time_s``. A coarse level with fewer than ``MIN_SAMPLES``
    usable voxels is skipped; :class:`RefineError` when the finest has too few.
    """
    started = time.perf_counter()
    initial = np.asarray(initial_affine, dtype=float)
    gain = _Gain.of_box(fixed) if params.fit_gain else None
    q = np.zeros(3)  # the gain's parameters: fitted at the first level that runs, then held
    current, levels, finest = initial, [], None
    for index, (shrink, sigma) in enumerate(
        zip(params.shrink_factors, params.level_sigmas, strict=True)
    ):
        grids = (_Grid.of(fixed, shrink, sigma), _Grid.of(moving, shrink, sigma))
        last = index + 1 == len(params.shrink_factors)
        fit_gain = gain is not None and finest is None
        level = {"shrink": shrink, "iterations": 0, "evaluations": 0, "blocks": 0, "rounds": 0}
        for round_ in range(ROUNDS):
            samples = _samples(
                *grids, current, [current, initial] if last else [current],
                (fixed_mask, moving_mask), params, seed + index, MARGIN,
            )  # fmt: skip
            level["blocks"] += samples.blocks
            level["samples"] = int(len(samples.points))
            if len(samples.points) < MIN_SAMPLES:
                break
            objective = _Objective(samples, current, gain, q, fit_gain)
            if not objective.weights.sum() > 0:  # no cube with contrast: nothing to align
                samples.points = samples.points[:0]
                break
            start = np.concatenate([np.zeros(12), q]) if fit_gain else np.zeros(12)
            bounds = objective.bounds(MARGIN, len(start))
            result = optimize.minimize(
                objective, start, jac=True, method="L-BFGS-B", bounds=bounds,
                options={"maxiter": params.iterations, "gtol": 1e-8, "ftol": FTOL},
            )  # fmt: skip
            current = objective.affine(result.x)
            if fit_gain:
                q = result.x[12:]
            level["iterations"] += int(result.nit)
            level["evaluations"] += objective.evaluations
            level["rounds"] = round_ + 1
            level["metric"] = round(-float(result.fun), 6)
            limits = np.array([high for _, high in bounds[:12]])
            if not np.any(np.abs(result.x[:12]) >= 0.999 * limits):
                break  # the optimum lies inside the windows
        if len(samples.points) < MIN_SAMPLES:
            if not last:
                levels.append({"shrink": shrink, "samples": level["samples"], "skipped": True})
                continue
            raise RefineError(
                f"level shrink {shrink}: {len(samples.points)} fixed voxels inside the mask map "
                f"inside the moving image; at least {MIN_SAMPLES} are needed"
            )
        if fit_gain:
            objective.hold_gain(q)
        level["samples"] = int(len(objective.values))
        levels.append(level)
        finest = objective
    # both affines judged on the finest level's samples (its windows reach both), same gain
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
    own grids; the moving windows reach where every candidate maps them). No gain is
    fitted: a local NCC cube is 4 voxels across, and a smooth illumination gain barely
    changes inside one.

    Returns ``(scores, weights)``: each candidate's NCC per cube, shape (candidates, cubes),
    and each cube's weight (its samples times its fixed contrast), so that the metric of
    candidate ``c`` is ``scores[c] @ weights / weights.sum()`` and the spread of the
    per-cube differences between two candidates says whether one beats the other beyond
    the noise. Raises :class:`RefineError` with too few usable samples.
    """
    shrink, sigma = params.shrink_factors[-1], params.level_sigmas[-1]
    grids = (_Grid.of(fixed, shrink, sigma), _Grid.of(moving, shrink, sigma))
    cover = [np.asarray(c, dtype=float) for c in candidates]
    samples = _samples(*grids, cover[0], cover, (fixed_mask, moving_mask), params, seed, 0)
    if len(samples.points) < MIN_SAMPLES:
        raise RefineError(
            f"{len(samples.points)} fixed voxels inside the mask map inside the moving image; "
            f"at least {MIN_SAMPLES} are needed to compare affines"
        )
    objective = _Objective(samples, cover[0])
    scores = np.array([objective.region_scores(c) for c in cover])
    return scores, objective.weights


def _parameters_of(objective: _Objective, matrix: np.ndarray) -> np.ndarray:
    """The parameters at which ``objective`` (started elsewhere) gives ``matrix``."""
    update = np.linalg.solve(objective.start, matrix)
    b = update[:3, :3] - np.eye(3)
    t = (update[:3, 3] + b @ objective.centre) / objective.step
    return np.concatenate([(b * (objective.scale / objective.step)).ravel(), t])
