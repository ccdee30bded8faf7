"""Accuracy of an estimated transform against a known one.

Both transforms map fixed-space points to moving-space points (µm, z, y, x).
The error at a point is the distance between where the two send it, in µm;
this is the target registration error (TRE) over the sampled points.
"""

from __future__ import annotations

from collections.abc import Callable

import dask.array as da
import numpy as np
from skimage.filters import threshold_otsu

from bigstream_core.io import Image
from bigstream_core.resample import resample

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


def foreground_ncc(
    fixed: Image, moving: Image, transform: PointMap, chunks=(128, 128, 128), step: int = 2
) -> float:
    """Normalised cross-correlation of ``fixed`` and ``moving(transform(x))`` over the fixed
    foreground (above its Otsu threshold), accumulated block by block (the transform
    computed every ``step``-th voxel, see :func:`~bigstream_core.resample.transformed_voxels`)."""
    aligned = resample(moving, transform, fixed.shape, fixed.spacing, fixed.origin, 1, chunks, step)
    reference = fixed.to_dask(chunks=aligned.chunks)
    sample = reference[tuple(slice(None, None, 4) for _ in range(3))].compute().ravel()
    level = threshold_otsu(sample.astype(float)) if np.ptp(sample) else sample[0]
    mask = reference > level
    a, b = reference.astype(np.float64), aligned.astype(np.float64)
    sums = [x.sum() for x in (mask, a * mask, b * mask, a * a * mask, b * b * mask, a * b * mask)]
    n, sa, sb, saa, sbb, sab = (float(v) for v in da.compute(*sums))
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
