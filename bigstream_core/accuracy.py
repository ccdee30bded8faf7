"""Accuracy of an estimated transform against a known one.

Both transforms map fixed-space points to moving-space points (µm, z, y, x).
The error at a point is the distance between where the two send it, in µm;
this is the target registration error (TRE) over the sampled points.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from skimage.filters import threshold_otsu

from bigstream_core.io import Image
from bigstream_core.masks import sample_stride
from bigstream_core.resample import resample_region
from bigstream_core.tiling import tile_grid

PointMap = Callable[[np.ndarray], np.ndarray]


def image_bounds(image: Image) -> tuple[np.ndarray, np.ndarray]:
    """Physical positions (µm, z y x) of the first and last voxel centres."""
    origin = np.asarray(image.origin, dtype=float)
    spacing = np.asarray(image.spacing, dtype=float)
    return origin, origin + (np.asarray(image.shape) - 1) * spacing


def grid_points(image: Image, per_axis: int = 16) -> np.ndarray:
    """A regular grid of ``per_axis**3`` points spanning the image, (N, 3) µm z y x."""
    low, high = image_bounds(image)
    axes = [np.linspace(lo, hi, per_axis) for lo, hi in zip(low, high, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)


def points_inside(points: np.ndarray, image: Image) -> np.ndarray:
    """Boolean mask of the points (µm, z y x) that fall inside ``image``."""
    low, high = image_bounds(image)
    return np.all((points >= low) & (points <= high), axis=1)


def foreground_points(image: Image, per_axis: int = 24) -> np.ndarray:
    """Grid points (µm, z y x) where ``image`` is foreground (above its Otsu threshold).

    The grid has ``per_axis`` points per axis; the image is read only at those
    voxels (dask reads just the chunks that hold them).
    """
    points = grid_points(image, per_axis)
    voxel = np.rint((points - np.asarray(image.origin)) / np.asarray(image.spacing)).astype(int)
    values = image.to_dask().vindex[tuple(voxel.T)].compute().astype(float)
    if np.ptp(values) == 0:
        return points
    return points[values > threshold_otsu(values)]


def transform_error(estimate: PointMap, truth: PointMap, points: np.ndarray) -> dict[str, float]:
    """TRE statistics (µm) of ``estimate`` against ``truth`` at ``points``.

    Returns ``mean``, ``median``, ``p95``, ``max`` (µm) and ``n_points``.
    """
    distances = np.linalg.norm(estimate(points) - truth(points), axis=1)
    return {
        "mean_um": float(distances.mean()),
        "median_um": float(np.median(distances)),
        "p95_um": float(np.percentile(distances, 95)),
        "max_um": float(distances.max()),
        "n_points": int(len(distances)),
    }


def evaluate(estimate: PointMap, truth: PointMap, fixed: Image, moving: Image) -> dict[str, float]:
    """TRE over the fixed image's foreground points whose true image lies in the moving image.

    ``estimate`` and ``truth`` map (N, 3) fixed points to moving points (µm, z y x);
    returns :func:`transform_error`'s statistics (µm). Example::

        truth = GroundTruth.from_json("truth.json")
        evaluate(affine_map(affine), truth, fix, mov)["mean_um"]
    """
    points = foreground_points(fixed)
    points = points[points_inside(truth(points), moving)]
    if len(points) == 0:
        raise ValueError("no fixed-image point maps inside the moving image under the truth")
    return transform_error(estimate, truth, points)


NCC_BLOCK = (64, 128, 128)
"""Fixed-grid voxels (z, y, x) :func:`foreground_ncc` holds at a time (with the moving
block pulled onto them: ~100 MB), whatever the image's size."""


def strided_sample(image: Image, stride: int, block=NCC_BLOCK) -> np.ndarray:
    """Every ``stride``-th voxel of ``image`` along each axis (from voxel 0), flat, read one
    block of about ``block`` voxels (whole multiples of the stride) at a time."""
    size = tuple(max(stride, b // stride * stride) for b in block)
    return np.concatenate([image.read(tile.slices("core"))[::stride, ::stride, ::stride].ravel()
                           for tile in tile_grid(image.shape, size)])  # fmt: skip


def foreground_ncc(
    fixed: Image, moving: Image, transform: PointMap, block=NCC_BLOCK, step: int = 2
) -> float:
    """Normalised cross-correlation of ``fixed`` and ``moving(transform(x))`` over the fixed
    foreground (above the Otsu threshold of a strided sample of at most
    :data:`~bigstream_core.masks.SAMPLE_VOXELS`), accumulated one fixed-grid block of
    ``block`` voxels (z, y, x) at a time, so memory follows the block, not the image (the
    transform computed every ``step``-th voxel, see
    :func:`~bigstream_core.resample.transformed_voxels`)."""
    sample = strided_sample(fixed, sample_stride(fixed.shape, least=4))
    level = threshold_otsu(sample.astype(float)) if np.ptp(sample) else sample[0]
    sums = np.zeros(6)
    for tile in tile_grid(fixed.shape, block):
        region = tile.slices("core")
        a = fixed.read(region).astype(np.float64)
        b = resample_region(moving, transform, region, fixed.spacing, fixed.origin, 1, step=step)
        mask = a > level
        a, b = a[mask], b[mask].astype(np.float64)
        sums += (a.size, a.sum(), b.sum(), a @ a, b @ b, a @ b)
    n, sa, sb, saa, sbb, sab = sums
    covariance = sab - sa * sb / n
    return covariance / np.sqrt((saa - sa * sa / n) * (sbb - sb * sb / n))


def stage_accuracy(
    stages: list[tuple[str, PointMap]], truth: PointMap, images: dict[str, dict[str, Image]]
) -> dict:
    """Accuracy before registration and after each stage: TRE (µm) over the high-res
    fixed foreground and NCC over the low-res foreground. The last stage's figures
    are also given at the top level."""
    rows = []
    for name, transform in [("none (before registration)", lambda p: p), *stages]:
        tre = evaluate(transform, truth, images["fixed"]["highres"], images["moving"]["highres"])
        ncc = foreground_ncc(images["fixed"]["lowres"], images["moving"]["lowres"], transform)
        rows.append({"transform": name, **tre, "ncc_fg": ncc})
    return {**rows[-1], "stages": rows}
