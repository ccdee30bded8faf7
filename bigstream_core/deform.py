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
  level is interpolated onto the new grid;
- per iteration: warp ``M`` by the field (trilinear), compute the local
  normalised cross-correlation in a ``(2 cc_radius + 1)^3`` window and its
  gradient with respect to the displacement (Avants et al. 2008), zero it
  outside the mask, smooth it (``update_sigma``), scale it so that the largest
  step is ``gradient_step`` level voxels, add it to the field and smooth the
  field (``field_sigma``);
- a step that does not raise the mean metric over the mask by
  ``stop_tolerance`` is undone and retried at half the length; a level stops
  after ``iterations`` steps or when ``MAX_HALVINGS`` halvings in a row did not
  help (the metric stopped improving). The best field is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from bigstream_core.io import Image
from bigstream_core.resample import resample_block
from bigstream_core.tiling import Tile
from bigstream_core.transforms import PointMap

_EPS = 1e-6
MAX_HALVINGS = 4  # a level stops when this many halvings of the step in a row did not help


@dataclass(frozen=True)
class DeformParams:
    """Parameters of :func:`register_block` (the ``deform`` config block).

    ``iterations``, ``shrink_factors`` and ``smooth_sigmas`` have one entry per
    level, coarse to fine; sigmas are full-res voxels; ``cc_radius``,
    ``gradient_step``, ``update_sigma`` and ``field_sigma`` are voxels of the
    level being registered; ``mask_threshold`` is an intensity of the fixed image:
    voxels at or below it (background) do not count in the metric.
    """

    cc_radius: int = 2
    iterations: tuple[int, ...] = (200, 100)
    shrink_factors: tuple[int, ...] = (4, 2)
    smooth_sigmas: tuple[float, ...] = (2.0, 1.0)
    gradient_step: float = 0.5
    update_sigma: float = 2.0
    field_sigma: float = 1.0
    stop_tolerance: float = 1e-4
    mask_threshold: float = 0.0

    @classmethod
    def from_config(cls, block: dict) -> DeformParams:
        """Parameters from the ``deform`` config block (keys not listed here are ignored)."""
        names = cls.__dataclass_fields__
        values = {key: value for key, value in block.items() if key in names}
        for key in ("iterations", "shrink_factors", "smooth_sigmas"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def level_image(image: np.ndarray, shrink: int, sigma: float) -> np.ndarray:
    """``image`` smoothed by ``sigma`` voxels (at least an anti-alias for ``shrink``) and
    sub-sampled by ``shrink`` (every ``shrink``-th voxel from voxel 0), float32."""
    sigma = max(sigma, 0.5 * (shrink - 1))
    smoothed = ndimage.gaussian_filter(image.astype(np.float32), sigma) if sigma > 0 else image
    return np.ascontiguousarray(smoothed[::shrink, ::shrink, ::shrink], dtype=np.float32)


def resize_field(field: np.ndarray, shape: tuple[int, int, int], factor: float) -> np.ndarray:
    """A field (z, y, x, 3) on a grid with ``factor`` times the voxel size of ``shape``'s grid,
    interpolated (linear along each axis in turn, edge values held) onto ``shape``: voxel
    ``i`` of the result sits at ``i / factor`` of the input. Values are µm: unchanged."""
    result = np.asarray(field, dtype=np.float32)
    for axis, size in enumerate(shape):
        position = np.clip(np.arange(size) / factor, 0, result.shape[axis] - 1)
        low = np.minimum(np.floor(position).astype(int), result.shape[axis] - 2).clip(0)
        high = np.minimum(low + 1, result.shape[axis] - 1)
        weight = (position - low).astype(np.float32)
        view = [1] * result.ndim
        view[axis] = size
        weight = weight.reshape(view)
        result = (
            np.take(result, low, axis=axis) * (1 - weight)
            + np.take(result, high, axis=axis) * weight
        )
    return result


def warp(image: np.ndarray, field_vox: np.ndarray, grid: list[np.ndarray]) -> np.ndarray:
    """``image(x + d(x))`` on ``image``'s grid; ``field_vox`` (3, z, y, x) in voxels."""
    coords = [grid[axis] + field_vox[axis] for axis in range(3)]
    return ndimage.map_coordinates(image, coords, order=1, mode="nearest")


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
    params: DeformParams,
) -> tuple[np.ndarray, dict]:
    """Greedy ascent of the local NCC at one level.

    ``field`` (3, z, y, x) µm is the start; returns the best field found and a
    report (metric before/after, iterations run).
    """
    grid = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in fixed.shape), indexing="ij")
    scale = (1.0 / spacing).astype(np.float32)[:, None, None, None]
    metric = LocalNCC(fixed, params.cc_radius)
    weight = mask.astype(np.float32)
    count = max(float(weight.sum()), 1.0)
    step = params.gradient_step * float(spacing.min())
    best, best_field, direction, first, halvings, runs = -np.inf, field, None, None, 0, 0
    for _ in range(iterations):
        runs += 1
        warped = warp(moving, field * scale, grid)
        cc, dcc = metric(warped)
        value = float((cc * weight).sum() / count)
        first = value if first is None else first
        if value > best + params.stop_tolerance:
            best, best_field, halvings = value, field, 0
            update = _smooth(
                np.stack(np.gradient(warped, *spacing)) * (dcc * weight), params.update_sigma
            )
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


def register_block(
    fixed: np.ndarray,
    moving: np.ndarray,
    spacing,
    params: DeformParams,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Displacement field (z, y, x, 3) float32 µm that aligns ``moving`` to ``fixed``.

    ``fixed`` and ``moving`` share one grid (z y x, ``spacing`` µm); ``mask``
    (bool, same shape) marks the voxels whose metric counts (default: both
    images non-zero). Returns the field and a report: the mean local NCC over the
    mask at the finest level, without the field and with it, iterations per level,
    seconds.
    """
    start = time.perf_counter()
    fixed = np.asarray(fixed, dtype=np.float32)
    moving = np.asarray(moving, dtype=np.float32)
    spacing = np.asarray(spacing, dtype=np.float32)
    if mask is None:
        mask = (fixed != 0) & (moving != 0)
    shape = fixed.shape
    field = np.zeros((3, 1, 1, 1), dtype=np.float32)
    field_factor = None
    levels = []
    for shrink, sigma, iterations in zip(
        params.shrink_factors, params.smooth_sigmas, params.iterations, strict=True
    ):
        level_fixed = level_image(fixed, shrink, sigma)
        level_moving = level_image(moving, shrink, sigma)
        level_mask = mask[::shrink, ::shrink, ::shrink]
        if field_factor is None:
            field = np.zeros((3, *level_fixed.shape), dtype=np.float32)
        else:
            field = np.moveaxis(
                resize_field(np.moveaxis(field, 0, -1), level_fixed.shape, field_factor / shrink),
                -1,
                0,
            )
        field, report = register_level(
            level_fixed, level_moving, level_mask, field, spacing * shrink, iterations, params
        )
        unregistered = level_metric(level_fixed, level_moving, level_mask, params.cc_radius)
        levels.append({"shrink": shrink, "metric_unregistered": unregistered, **report})
        field_factor = shrink
    field = np.moveaxis(field, 0, -1)
    if field_factor != 1:
        field = resize_field(field, shape, float(field_factor))
    return field.astype(np.float32), {
        "ncc_before": levels[-1]["metric_unregistered"],
        "ncc_after": levels[-1]["metric_after"],
        "iterations": [level["iterations"] for level in levels],
        "levels": levels,
        "seconds": time.perf_counter() - start,
    }


def register_tile(
    fixed: Image, moving: Image, transform: PointMap, tile: Tile, params: DeformParams
) -> tuple[np.ndarray, dict]:
    """The displacement field (halo shape + (3,), µm) of one block of the fixed high-res grid.

    Reads the fixed block over ``tile``'s halo and only the part of the moving
    image that ``transform`` (the affine stages, fixed -> moving) sends it to.
    The metric counts voxels where the fixed block is above
    ``params.mask_threshold`` and the moving image has data; a block with no
    such voxel gets a zero field.
    """
    region = tile.slices("halo")
    fixed_block = fixed.read(region)
    moving_block, inside = resample_block(
        moving, transform, region, fixed.spacing, fixed.origin, order=1, return_inside=True
    )
    mask = inside & (fixed_block > params.mask_threshold)
    row = {"tile": tile.id, "voxels": int(mask.size), "masked_voxels": int(mask.size - mask.sum())}
    if not mask.any():
        field = np.zeros((*mask.shape, 3), dtype=np.float32)
        return field, {**row, "status": "empty", "ncc_before": np.nan, "ncc_after": np.nan,
                       "iterations": [], "seconds": 0.0, "max_um": 0.0}  # fmt: skip
    field, report = register_block(fixed_block, moving_block, fixed.spacing, params, mask)
    report.pop("levels")
    largest = float(np.sqrt((field.astype(np.float64) ** 2).sum(axis=-1)).max())
    return field, {**row, "status": "ok", **report, "max_um": largest}
