"""Greedy multi-resolution deformable registration of one block, local-NCC metric.

Both inputs are on the same voxel grid (the fixed block, z y x, with its
``spacing`` in µm): the fixed block ``F`` and the moving image already pulled
through the affine stages, ``M(x) = moving(G(L(x)))``. The result is a
displacement field ``d`` (z, y, x, 3) in µm, z y x components, such that
``M(x + d(x))`` matches ``F(x)``; the full transform is then
``T(x) = G(L(x + d(x)))``.

The method (written here with scipy.ndimage, no registration library):

- per level, coarse to fine: both images Gaussian-smoothed (``smooth_sigma``
  full-res voxels) and sub-sampled by ``shrink``; the field from the coarser
  level is interpolated onto the new grid. Each level is made from the next
  finer one (:func:`level_cascade`), so only the finest costs a pass over the
  full resolution. A workflow block (:func:`register_tile`) never forms ``M``
  at full resolution: the moving image is smoothed in its own voxels (coarser
  levels from the finer one's smoothed window, subsampled) and sampled through
  ``G(L(x))`` at each level's grid points only (:func:`tile_levels`), and its
  field is returned on the finest level's grid (the stitching blends at its nodes);
- per iteration: warp ``M`` by the field (trilinear), compute the local
  normalised cross-correlation in a ``(2 cc_radius + 1)^3`` window and its
  gradient with respect to the displacement (Avants et al. 2008; through the
  warped moving image's gradient, or with ``gradient: symmetric`` the mean of
  it and the fixed image's), zero it
  outside the mask, smooth it (``update_sigma``), scale it so that the largest
  step is ``gradient_step`` level voxels, add it to the field and smooth the
  field (``field_sigma``);
- a step that does not raise the mean metric over the mask by
  ``stop_tolerance`` is undone and retried at half the length; a level stops
  after ``iterations`` steps or when ``MAX_HALVINGS`` halvings in a row did not
  help (the metric stopped improving). The best field is kept.

NaN or infinite voxels of either image are read as 0: holes with sharp edges, which the
metric would align like tissue edges. Like the background below ``mask_threshold``, they
are left out of the metric, with a margin: every level voxel whose smoothed value takes
more than :data:`HOLE_SHARE` of its weight from a hole (the hole's blurred rim, which
reads as a false edge). The moving image's holes are placed where each level's starting
field puts them (:func:`clear_of_holes`). The NCC window is not widened around them: a
masked voxel gets no update of its own, only its neighbours' through the smoothing, so a
wider margin starves more of the field (on a `dense` phantom block, the RMS error within 8
voxels of a moving hole: 0.48 voxel with this margin, 0.71 with the window added, 0.50
unmasked; on test_deform's sparse cells the worst error there went from 4.3 voxels
unmasked to 1.1, tests/test_nonfinite.py).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bigstream_core.interpolation import linear_at, resize_field
from bigstream_core.io import Image
from bigstream_core.resample import inside_image, source_window, transformed_voxels
from bigstream_core.tiling import Tile
from bigstream_core.transforms import PointMap

_EPS = 1e-6
HOLE_SHARE = 0.1
"""A level voxel whose smoothed value takes more than this share of its weight from NaN or
infinite voxels (read as 0) is left out of the metric: it is dimmed by more than 10 %."""
MAX_HALVINGS = 4  # a level stops when this many halvings of the step in a row did not help
GRADIENTS = ("moving", "symmetric")
"""``DeformParams.gradient``: the image gradient the update follows. ``moving``: the warped
moving image's (greedy, one-sided); ``symmetric``: the mean of it and the fixed image's
(the symmetric, ESM-like gradient of symmetric demons: better conditioned, runs more
iterations before the metric stops rising)."""


@dataclass(frozen=True)
class DeformParams:
    """Parameters of :func:`register_tile` (the ``deform`` config block).

    ``iterations``, ``shrink_factors`` and ``smooth_sigmas`` have one entry per
    level, coarse to fine; sigmas are full-res voxels; ``cc_radius``,
    ``gradient_step``, ``update_sigma`` and ``field_sigma`` are voxels of the
    level being registered (``cc_radius``: one for every level, or one per level);
    ``mask_threshold`` is an intensity of the fixed image: voxels at or below it
    (background) do not count in the metric; ``gradient``: one of :data:`GRADIENTS`.
    """

    cc_radius: int | tuple[int, ...] = 2
    iterations: tuple[int, ...] = (200, 100)
    shrink_factors: tuple[int, ...] = (4, 2)
    smooth_sigmas: tuple[float, ...] = (2.0, 1.0)
    gradient_step: float = 0.5
    update_sigma: float = 2.0
    field_sigma: float = 1.0
    stop_tolerance: float = 1e-4
    mask_threshold: float = 0.0
    gradient: str = "moving"

    @classmethod
    def from_config(cls, block: dict) -> DeformParams:
        """Parameters from the ``deform`` config block (keys not listed here are ignored)."""
        names = cls.__dataclass_fields__
        values = {key: value for key, value in block.items() if key in names}
        for key in ("iterations", "shrink_factors", "smooth_sigmas", "cc_radius"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    def __post_init__(self):
        if self.gradient not in GRADIENTS:
            raise ValueError(f"deform gradient {self.gradient!r}: expected one of {GRADIENTS}")
        levels = len(self.shrink_factors)
        if not isinstance(self.cc_radius, int) and len(self.cc_radius) != levels:
            raise ValueError(f"deform cc_radius {list(self.cc_radius)}: expected one radius "
                             f"or one per level ({levels})")  # fmt: skip

    def radii(self) -> tuple[int, ...]:
        """The local NCC's window radius at each level, coarse to fine (voxels of the level)."""
        if isinstance(self.cc_radius, int):
            return (self.cc_radius,) * len(self.shrink_factors)
        return tuple(self.cc_radius)


def warp(image: np.ndarray, field_vox: np.ndarray, grid: list[np.ndarray]) -> np.ndarray:
    """``image(x + d(x))`` on ``image``'s grid; ``field_vox`` (3, z, y, x) in voxels."""
    coords = [grid[axis] + field_vox[axis] for axis in range(3)]
    return linear_at(image, coords)


class LocalNCC:
    """Local normalised cross-correlation against a fixed image, and its gradient.

    ``cc(x) = s_fm^2 / (s_ff s_mm)`` over the window of radius ``radius``
    voxels around ``x``; the fixed image's window statistics are computed once.
    """

    def __init__(self, fixed: np.ndarray, radius: int):
        self.size = 2 * radius + 1
        self.fixed = fixed
        self.fixed_mean = ndimage.uniform_filter(fixed, self.size)
        self.fixed_var = np.maximum(
            ndimage.uniform_filter(fixed * fixed, self.size) - self.fixed_mean**2, 0.0
        )

    def __call__(self, moving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(cc, dcc)``: the local NCC map and its derivative with respect to ``moving(x)``."""
        mean = ndimage.uniform_filter(moving, self.size)
        var = np.maximum(ndimage.uniform_filter(moving * moving, self.size) - mean**2, 0.0)
        cov = ndimage.uniform_filter(self.fixed * moving, self.size) - self.fixed_mean * mean
        denominator = self.fixed_var * var + _EPS
        cc = cov * cov / denominator
        ratio = cov / (var + _EPS)
        dcc = 2.0 * cov / denominator * ((self.fixed - self.fixed_mean) - ratio * (moving - mean))
        return cc, dcc


def _smooth(field: np.ndarray, sigma: float) -> np.ndarray:
    """Each component of a (3, z, y, x) field smoothed by ``sigma`` voxels."""
    if sigma <= 0:
        return field
    return np.stack([ndimage.gaussian_filter(c, sigma) for c in field])


def level_metric(fixed: np.ndarray, moving: np.ndarray, mask: np.ndarray, radius: int) -> float:
    """Mean local NCC over ``mask`` of two images on one grid, without any warp."""
    cc, _ = LocalNCC(fixed, radius)(moving)
    return float(cc[mask].mean()) if mask.any() else float("nan")


def register_level(
    fixed: np.ndarray,
    moving: np.ndarray,
    mask: np.ndarray,
    field: np.ndarray,
    spacing: np.ndarray,
    iterations: int,
    radius: int,
    params: DeformParams,
) -> tuple[np.ndarray, dict]:
    """Greedy ascent of the local NCC (window radius ``radius`` voxels) at one level.

    ``field`` (3, z, y, x) µm is the start; returns the best field found and a
    report (metric before/after, iterations run).
    """
    grid = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in fixed.shape), indexing="ij")
    scale = (1.0 / spacing).astype(np.float32)[:, None, None, None]
    metric = LocalNCC(fixed, radius)
    weight = mask.astype(np.float32)
    count = max(float(weight.sum()), 1.0)
    step = params.gradient_step * float(spacing.min())
    fixed_slope = np.stack(np.gradient(fixed, *spacing)) if params.gradient == "symmetric" else None
    best, best_field, direction, first, halvings, runs = -np.inf, field, None, None, 0, 0
    for _ in range(iterations):
        runs += 1
        warped = warp(moving, field * scale, grid)
        cc, dcc = metric(warped)
        value = float((cc * weight).sum() / count)
        first = value if first is None else first
        if value > best + params.stop_tolerance:
            best, best_field, halvings = value, field, 0
            slope = np.stack(np.gradient(warped, *spacing))
            if params.gradient == "symmetric":
                slope = 0.5 * (slope + fixed_slope)
            update = _smooth(slope * (dcc * weight), params.update_sigma)
            largest = float(np.sqrt((update * update).sum(axis=0)).max())
            if largest <= 0:
                break
            direction = update / largest
        else:
            halvings += 1
            if halvings > MAX_HALVINGS:
                break
            step *= 0.5
        field = _smooth(best_field + direction * step, params.field_sigma)
    after = best if runs else first  # no iteration asked: nothing measured
    return best_field, {"metric_before": first, "metric_after": after, "iterations": runs}


@dataclass(frozen=True)
class Level:
    """One resolution level of a block: both images and the mask on the level's grid
    (every ``shrink``-th full-res voxel from the block's first one). ``moving_holes``
    (float32, the level's shape; None: the moving image read no NaN or infinite voxel):
    the share of each moving sample's weight that comes from the moving image's holes,
    before any field (the fixed image's holes are out of ``mask`` already)."""

    shrink: int
    fixed: np.ndarray
    moving: np.ndarray
    mask: np.ndarray
    moving_holes: np.ndarray | None = None


def clear_of_holes(level: Level, field: np.ndarray, spacing) -> np.ndarray:
    """``level.mask`` less the voxels that the moving image's holes reach (more than
    :data:`HOLE_SHARE`) where ``field`` ((3, z, y, x) µm; ``spacing``: the level's voxel
    size, µm, z y x) puts them."""
    if level.moving_holes is None:
        return level.mask
    grid = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in level.fixed.shape),
                       indexing="ij")  # fmt: skip
    scale = (1.0 / np.asarray(spacing, dtype=np.float32))[:, None, None, None]
    return level.mask & (warp(level.moving_holes, field * scale, grid) <= HOLE_SHARE)


def level_sigma(shrink: int, sigma: float) -> float:
    """A level's smoothing (full-res voxels): ``sigma``, at least an anti-alias for ``shrink``."""
    return max(sigma, 0.5 * (shrink - 1))


def level_steps(plan) -> list[tuple[int, float]]:
    """How each level of ``plan`` ((shrink, sigma) pairs, coarse to fine; sigmas full-res
    voxels) is made from the next finer one, finest first: ``(step, extra)``, the
    subsampling of the finer level and the Gaussian it is smoothed by first, in the finer
    level's voxels (the finest is made from full resolution), so that each level holds the
    full resolution smoothed by :func:`level_sigma` and sampled every ``shrink`` voxels.
    A shrink that its finer level's does not divide is made from full resolution
    (``step`` = its shrink, smoothing the whole way)."""
    steps, done_shrink, done_sigma = [], 1, 0.0
    for shrink, sigma in reversed(list(plan)):
        total = level_sigma(shrink, sigma)
        if shrink % done_shrink:
            done_shrink, done_sigma = 1, 0.0
        extra = math.sqrt(max(total**2 - done_sigma**2, 0.0)) / done_shrink
        steps.append((shrink // done_shrink, extra))
        done_shrink, done_sigma = shrink, max(total, done_sigma)
    return steps


def level_cascade(image: np.ndarray, plan) -> list[np.ndarray]:
    """``image`` (full resolution) at every level of ``plan`` (see :func:`level_steps`),
    coarse to fine, float32: level voxel ``j`` is full-res voxel ``j * shrink``. Each level is
    smoothed and subsampled from the next finer one, so only the finest level costs a pass
    over the full resolution."""
    levels, finer = [], np.asarray(image, dtype=np.float32)
    full = finer
    for (step, extra), (shrink, _) in zip(level_steps(plan), reversed(list(plan)), strict=True):
        source = full if step == shrink else finer
        smoothed = ndimage.gaussian_filter(source, extra) if extra > 0 else source
        finer = np.ascontiguousarray(smoothed[::step, ::step, ::step], dtype=np.float32)
        levels.append(finer)
    return levels[::-1]


def register_levels(levels: list[Level], spacing, params: DeformParams) -> tuple[np.ndarray, dict]:
    """The field found level by level, coarse to fine, on the finest level's grid:
    (z', y', x', 3) float32 µm, node ``j`` at full-res voxel ``j * shrink`` of the
    block (``spacing``: full-res µm, z y x); :func:`~bigstream_core.interpolation.resize_field`
    gives it at full resolution.

    The report: the mean local NCC over the mask at the finest level, without
    the field and with it, iterations per level, seconds.
    """
    start = time.perf_counter()
    spacing = np.asarray(spacing, dtype=np.float32)
    field, field_factor, reports = None, None, []
    for level, iterations, radius in zip(levels, params.iterations, params.radii(), strict=True):
        if field is None:
            field = np.zeros((3, *level.fixed.shape), dtype=np.float32)
        else:
            factor = field_factor / level.shrink
            field = np.moveaxis(
                resize_field(np.moveaxis(field, 0, -1), level.fixed.shape, factor), -1, 0
            )
        mask = clear_of_holes(level, field, spacing * level.shrink)
        field, report = register_level(level.fixed, level.moving, mask, field,
                                       spacing * level.shrink, iterations, radius,
                                       params)  # fmt: skip
        unregistered = level_metric(level.fixed, level.moving, mask, radius)
        reports.append({"shrink": level.shrink, "metric_unregistered": unregistered, **report})
        field_factor = level.shrink
    return np.ascontiguousarray(np.moveaxis(field, 0, -1), dtype=np.float32), {
        "ncc_before": reports[-1]["metric_unregistered"],
        "ncc_after": reports[-1]["metric_after"],
        "iterations": [report["iterations"] for report in reports],
        "levels": reports,
        "seconds": time.perf_counter() - start,
    }


def tile_levels(
    fixed: Image, moving: Image, transform: PointMap, tile: Tile, params: DeformParams
) -> tuple[list[Level], dict[str, int]]:
    """The levels of one block: the fixed block read over ``tile``'s halo and
    smoothed; the moving image read once over the window the block maps to,
    smoothed in its own voxels by the same physical width, and sampled at each
    level's grid points only, through ``transform`` (the affine stages, fixed ->
    moving). Voxels at or below ``params.mask_threshold`` in the fixed block, or
    mapping outside the moving image, are masked; so are those that the fixed
    block's NaN or infinite voxels reach (see the module's docstring), and the moving
    window's are kept per level (:attr:`Level.moving_holes`).

    Also returns how many NaN or infinite voxels (read as 0) the two reads met, from the
    reads themselves: ``{"nonfinite_fixed": ..., "nonfinite_moving": ...}`` (the fixed
    block's halo and the moving window included, so overlapping blocks count a voxel
    more than once)."""
    region = tile.slices("halo")
    fixed_block, fixed_holes = fixed.read_with_holes(region)
    fixed_block = fixed_block.astype(np.float32)
    foreground = fixed_block > params.mask_threshold
    plan = list(zip(params.shrink_factors, params.smooth_sigmas, strict=True))
    voxels = [
        transformed_voxels(moving, transform, tuple(slice(s.start, s.stop, shrink) for s in region),
                           fixed.spacing, fixed.origin)
        for shrink, _ in plan
    ]  # fmt: skip
    to_moving = np.asarray(fixed.spacing) / np.asarray(moving.spacing)
    widest = max(level_sigma(shrink, sigma) for shrink, sigma in plan)
    margin = int(np.ceil(4 * widest * to_moving.max())) + max(params.shrink_factors) + 1
    window = source_window(moving, np.concatenate(voxels, axis=1), margin)
    source, moving_holes = (None, None) if window is None else moving.read_with_holes(window)
    fixed_levels = level_cascade(fixed_block, plan)
    moving_levels = _moving_levels(moving, source, window, voxels, plan, to_moving)
    del source  # memory: the hole mask's pass below holds no second window
    none = [None] * len(plan)
    fixed_shares = none if fixed_holes is None else level_cascade(fixed_holes, plan)
    moving_shares = none if moving_holes is None else [
        share for share, _ in _moving_levels(moving, moving_holes, window, voxels, plan, to_moving)
    ]  # fmt: skip
    levels = []
    for (shrink, _), level_fixed, (values, inside), fixed_share, moving_share in zip(
        plan, fixed_levels, moving_levels, fixed_shares, moving_shares, strict=True
    ):
        values, inside = values.reshape(level_fixed.shape), inside.reshape(level_fixed.shape)
        mask = foreground[::shrink, ::shrink, ::shrink] & inside
        if fixed_share is not None:
            mask &= fixed_share <= HOLE_SHARE
        if moving_share is not None:
            moving_share = moving_share.reshape(level_fixed.shape)
        levels.append(Level(shrink, level_fixed, values, mask, moving_share))
    counts = {"nonfinite_fixed": fixed.count_holes(fixed_holes),
              "nonfinite_moving": moving.count_holes(moving_holes)}  # fmt: skip
    return levels, counts


def _moving_levels(moving: Image, source, window, voxels, plan, to_moving) -> list:
    """The moving image's values (``source``: its ``window``, read; None when the block
    misses the image) at each level's points ``voxels`` (3, N moving voxel
    coordinates per level, coarse to fine), smoothed by the level's width converted to
    moving voxels, and whether each point lies inside the moving image: ``(values, inside)``
    per level, coarse to fine. Like the fixed levels, each
    coarser source is smoothed and subsampled from the next finer one, when the shrink
    factors divide each other and the finer smoothing bounds aliasing (else from the
    window at full resolution)."""
    source = None if source is None else np.asarray(source, dtype=np.float32)
    start = None if window is None else np.array([s.start for s in window], dtype=np.float32)
    results, finer, factor, done = [], source, 1, np.zeros(3)
    for (shrink, sigma), points in zip(reversed(plan), reversed(voxels), strict=True):
        inside = inside_image(moving.shape, points)
        values = np.zeros(points.shape[1], dtype=np.float32)
        if source is not None:
            width = level_sigma(shrink, sigma) * to_moving  # moving voxels
            step = 2 if results and factor * 2 <= shrink and done.min() >= 1.0 else 1
            if step == 1 and results:  # restart from the window
                finer, factor, done = source, 1, np.zeros(3)
            base = finer[::step, ::step, ::step] if step > 1 else finer
            factor *= step
            extra = np.sqrt(np.maximum(width**2 - done**2, 0.0)) / factor
            smoothed = ndimage.gaussian_filter(base, extra) if extra.max() > 0 else base
            local = (points - start[:, None]) / np.float32(factor)
            values[inside] = linear_at(
                smoothed, local[:, inside], outside="zero", output=np.float32
            )
            finer, done = smoothed, np.maximum(width, done)
        results.append((values, inside))
    return results[::-1]


def register_tile(
    fixed: Image, moving: Image, transform: PointMap, tile: Tile, params: DeformParams
) -> tuple[np.ndarray, dict]:
    """The displacement field of one block of the fixed high-res grid, on the block's
    finest level grid: (z', y', x', 3) float32 µm, node ``j`` at voxel ``j * shrink``
    of ``tile``'s halo (``shrink`` = ``params.shrink_factors[-1]``, recorded in the
    report as ``field_shrink``; a halo starting on a multiple of it puts the nodes on
    every ``shrink``-th voxel of the image, as the deform grid's do;
    :func:`~bigstream_core.interpolation.upsample_box` gives any part at full resolution).

    Works on the levels of :func:`tile_levels` (the full-res moving block is
    never formed); a block whose finest level has no unmasked voxel gets a
    zero field. The report counts the NaN or infinite voxels the block read
    (``nonfinite_fixed``, ``nonfinite_moving``; see :func:`tile_levels`).
    """
    shape = tuple(stop - start for start, stop in tile.halo)
    levels, nonfinite = tile_levels(fixed, moving, transform, tile, params)
    mask = levels[-1].mask
    row = {"tile": tile.id, "voxels": math.prod(shape), "masked_share": 1.0 - float(mask.mean()),
           "field_shrink": levels[-1].shrink, **nonfinite}  # fmt: skip
    if not mask.any():
        field = np.zeros((*mask.shape, 3), dtype=np.float32)
        return field, {**row, "status": "empty", "ncc_before": np.nan, "ncc_after": np.nan,
                       "iterations": [], "seconds": 0.0, "max_um": 0.0}  # fmt: skip
    field, report = register_levels(levels, fixed.spacing, params)
    report.pop("levels")
    largest = float(np.sqrt((field.astype(np.float64) ** 2).sum(axis=-1)).max())
    return field, {**row, "status": "ok", **report, "max_um": largest}
