"""QC pictures and the numbers beside them: fixed (magenta) over moving (green) on the
three mid-planes, a checkerboard of fixed and result, per-tile heat maps, and the NCC of
the planes over the fixed foreground.

Planes come from :mod:`bigstream_workflow.qc_planes` (z, y, x axes; µm extents). Figures are
PNG files written with matplotlib's Agg backend.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from skimage.filters import threshold_otsu  # noqa: E402

from bigstream_core.tiling import parse_tile_id  # noqa: E402
from bigstream_workflow.qc_planes import AXES, DisplayGrid  # noqa: E402

MAX_LAYERS = 6  # z layers of tiles drawn per heat map


def normalised(plane: np.ndarray) -> np.ndarray:
    """``plane`` stretched to [0, 1] between its 1st and 99.5th percentile (NaN -> 0)."""
    finite = plane[np.isfinite(plane)]
    if finite.size == 0:
        return np.zeros_like(plane)
    low, high = np.percentile(finite, [1.0, 99.5])
    scaled = (plane - low) / (high - low) if high > low else np.zeros_like(plane)
    return np.nan_to_num(np.clip(scaled, 0.0, 1.0), nan=0.0)


def overlay(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """RGB picture: fixed in magenta (red + blue), moving in green; aligned = grey/white."""
    f, m = normalised(fixed), normalised(moving)
    return np.stack([f, m, f], axis=-1)


def mid_plane_ncc(fixed_planes: list[np.ndarray], moving_planes: list[np.ndarray]) -> float:
    """NCC of the planes' voxels over the fixed foreground (above the Otsu threshold of the
    fixed planes), where both images are defined; NaN when fewer than 10 such voxels."""
    f = np.concatenate([p.ravel() for p in fixed_planes]).astype(np.float64)
    m = np.concatenate([p.ravel() for p in moving_planes]).astype(np.float64)
    both = np.isfinite(f) & np.isfinite(m)
    if both.sum() < 10 or np.ptp(f[both]) == 0:
        return float("nan")
    keep = both & (np.nan_to_num(f, nan=-np.inf) > threshold_otsu(f[both]))
    a, b = f[keep] - f[keep].mean(), m[keep] - m[keep].mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def _plane_row(axes_row, grid: DisplayGrid, pictures: list[np.ndarray]) -> None:
    for axis, (ax, picture) in enumerate(zip(axes_row, pictures, strict=True)):
        rows, cols = grid.plane_axes(axis)
        ax.imshow(picture, extent=grid.extent_um(axis), interpolation="nearest")
        ax.set_title(f"{AXES[axis]} = {grid.centre_um[axis]:.0f} µm", fontsize=9)
        ax.set_xlabel(f"{AXES[cols]} (µm)", fontsize=8)
        ax.set_ylabel(f"{AXES[rows]} (µm)", fontsize=8)
        ax.tick_params(labelsize=7)


def save_overlay(path: str | Path, grid: DisplayGrid, fixed_planes, moving_planes, title: str):
    """Fixed (magenta) over moving (green) on the three planes, one PNG."""
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.4), layout="constrained")
    pictures = [overlay(f, m) for f, m in zip(fixed_planes, moving_planes, strict=True)]
    _plane_row(axes, grid, pictures)
    figure.suptitle(title, fontsize=11)
    figure.savefig(path, dpi=90, format="png")
    plt.close(figure)


def checkerboard(fixed: np.ndarray, moving: np.ndarray, squares: int = 8) -> np.ndarray:
    """Grey picture alternating fixed and moving in ``squares`` x ``squares`` squares."""
    rows = np.arange(fixed.shape[0]) * squares // max(fixed.shape[0], 1)
    cols = np.arange(fixed.shape[1]) * squares // max(fixed.shape[1], 1)
    take_fixed = (rows[:, None] + cols[None, :]) % 2 == 0
    return np.where(take_fixed, normalised(fixed), normalised(moving))


def save_checkerboard(path: str | Path, grid: DisplayGrid, fixed_planes, moving_planes, title):
    """Checkerboards of fixed and moving on the three planes, one PNG."""
    figure, axes = plt.subplots(1, 3, figsize=(13, 4.4), layout="constrained")
    pictures = [checkerboard(f, m) for f, m in zip(fixed_planes, moving_planes, strict=True)]
    _plane_row(axes, grid, [np.repeat(p[..., None], 3, axis=-1) for p in pictures])
    figure.suptitle(title, fontsize=11)
    figure.savefig(path, dpi=90, format="png")
    plt.close(figure)


def tile_values(report: pd.DataFrame, column: str) -> np.ndarray:
    """A per-tile column of a stage report (rows named ``z<i>_y<j>_x<k>`` in ``tile``)
    as a (tz, ty, tx) float array, NaN where a tile has no value."""
    index = np.array([parse_tile_id(tile) for tile in report["tile"]])
    grid = np.full(tuple(index.max(axis=0) + 1), np.nan)
    grid[tuple(index.T)] = pd.to_numeric(report[column], errors="coerce").to_numpy(float)
    return grid


def layers_shown(layers: int) -> list[int]:
    """At most ``MAX_LAYERS`` z layers of tiles out of ``layers``, evenly chosen."""
    return sorted(set(np.linspace(0, layers - 1, min(layers, MAX_LAYERS)).round().astype(int)))


def save_tile_maps(path: str | Path, maps: dict[str, np.ndarray], title: str) -> None:
    """One row per map (name -> (tz, ty, tx) grid), one panel per z layer of its tiles (at
    most ``MAX_LAYERS``, evenly chosen), each tile a cell with its value written in it."""
    columns = max(len(layers_shown(grid.shape[0])) for grid in maps.values())
    figure, axes = plt.subplots(len(maps), columns, squeeze=False, layout="constrained",
                                figsize=(2.8 * columns + 1, 2.4 * len(maps)))  # fmt: skip
    for row, (name, grid) in enumerate(maps.items()):
        finite = grid[np.isfinite(grid)]
        low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        high = high if high > low else low + 1
        shown = layers_shown(grid.shape[0])
        for ax in axes[row, len(shown) :]:
            ax.axis("off")
        for ax, layer in zip(axes[row], shown, strict=False):
            values = grid[layer]
            image = ax.imshow(values, vmin=low, vmax=high, cmap="viridis", interpolation="nearest")
            if values.size <= 64:
                for (y, x), value in np.ndenumerate(values):
                    if np.isfinite(value):
                        ax.text(x, y, f"{value:.3g}", ha="center", va="center", fontsize=7,
                                color="white" if value < (low + high) / 2 else "black")  # fmt: skip
            ax.set_title(f"{name}, tile z {layer}", fontsize=8)
            ax.set_xticks(range(values.shape[1]))
            ax.set_yticks(range(values.shape[0]))
            ax.set_xlabel("tile x", fontsize=7)
            ax.set_ylabel("tile y", fontsize=7)
            ax.tick_params(labelsize=6)
        figure.colorbar(image, ax=axes[row, :].tolist(), shrink=0.8)
    figure.suptitle(title, fontsize=11)
    figure.savefig(path, dpi=90, format="png")
    plt.close(figure)
