"""Three orthogonal planes through the fixed image's centre, sampled on one physical
display grid from any image (fixed, moving, or a result on the fixed grid), for QC views.

Axis order z, y, x; positions in µm, voxel ``i`` of an image at ``origin + i * spacing``.
Sampling is nearest-voxel. A plane is read in bands one storage chunk high, so a view
costs about one band of one plane in memory, never the volume, whatever the image size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bigstream_core.io import Image

AXES = ("z", "y", "x")


@dataclass(frozen=True)
class DisplayGrid:
    """Sample positions of the three planes.

    ``coords_um[a]`` are the positions (µm) along axis ``a`` of the display pixels; the
    plane normal to axis ``a`` passes through ``centre_um[a]`` and spans the other two
    axes' positions (rows: the first of them in z, y, x order, columns: the second).
    """

    centre_um: tuple[float, float, float]
    coords_um: tuple[np.ndarray, np.ndarray, np.ndarray]

    @classmethod
    def around(cls, image: Image, max_pixels: int = 600) -> DisplayGrid:
        """The planes through ``image``'s centre over its whole extent, at its spacing or
        coarser, so that no side exceeds ``max_pixels`` pixels."""
        coords, centre = [], []
        for size, spacing, origin in zip(image.shape, image.spacing, image.origin, strict=True):
            extent = (size - 1) * spacing
            step = max(spacing, extent / max(max_pixels - 1, 1))
            coords.append(origin + np.arange(int(extent // step) + 1) * step)
            centre.append(origin + extent / 2)
        return cls(tuple(centre), tuple(coords))

    def plane_axes(self, axis: int) -> tuple[int, int]:
        """Row and column axes of the plane normal to ``axis``."""
        rows, cols = (a for a in range(3) if a != axis)
        return rows, cols

    def extent_um(self, axis: int) -> tuple[float, float, float, float]:
        """matplotlib ``imshow`` extent (left, right, bottom, top) of a plane, µm."""
        rows, cols = (self.coords_um[a] for a in self.plane_axes(axis))
        return cols[0], cols[-1], rows[-1], rows[0]


def nearest_voxels(positions_um: np.ndarray, origin: float, spacing: float, size: int):
    """Nearest voxel index of each position along one axis, and whether it lies inside."""
    index = np.rint((np.asarray(positions_um) - origin) / spacing).astype(np.int64)
    return index, (index >= 0) & (index < size)


def sample_plane(image: Image, grid: DisplayGrid, axis: int) -> np.ndarray:
    """``image`` on the display plane normal to ``axis`` (float32, NaN outside it)."""
    rows_axis, cols_axis = grid.plane_axes(axis)
    out = np.full((len(grid.coords_um[rows_axis]), len(grid.coords_um[cols_axis])), np.nan,
                  dtype=np.float32)  # fmt: skip
    index, inside = nearest_voxels(
        grid.centre_um[axis], image.origin[axis], image.spacing[axis], image.shape[axis]
    )
    rows, row_inside = (
        nearest_voxels(grid.coords_um[rows_axis], image.origin[rows_axis],
                       image.spacing[rows_axis], image.shape[rows_axis])
    )  # fmt: skip
    cols, col_inside = (
        nearest_voxels(grid.coords_um[cols_axis], image.origin[cols_axis],
                       image.spacing[cols_axis], image.shape[cols_axis])
    )  # fmt: skip
    if not (inside and row_inside.any() and col_inside.any()):
        return out
    first_col, last_col = cols[col_inside].min(), cols[col_inside].max() + 1
    band = image.chunks[rows_axis]
    for start in range(rows[row_inside].min() // band * band, rows[row_inside].max() + 1, band):
        wanted = row_inside & (rows >= start) & (rows < start + band)
        if not wanted.any():
            continue
        low, high = rows[wanted].min(), rows[wanted].max() + 1
        region = [slice(int(index), int(index) + 1)] * 3
        region[rows_axis], region[cols_axis] = slice(low, high), slice(first_col, last_col)
        block = image.read(tuple(region)).squeeze(axis)
        picked = block[rows[wanted] - low][:, cols[col_inside] - first_col]
        out[np.ix_(wanted, col_inside)] = picked
    return out


def sample_planes(image: Image, grid: DisplayGrid) -> list[np.ndarray]:
    """The three planes (normal to z, y, x) of ``image`` on ``grid``."""
    return [sample_plane(image, grid, axis) for axis in range(3)]
