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
from bigstream_core.tiling import Tile, budget_batches, tile_grid

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


NCC_VOXELS_PER_JOB = 2**26
"""Fixed low-res voxels (about 67 M) a job of the workflow's NCC covers (:func:`ncc_batches`),
give or take a block's rounding (at most 84 M): one job on the demo and test pairs, a few
at a 300 x 500 x 900 level, tens to a hundred or so at a terabyte's (1-8 G voxels)."""


def ncc_batches(
    shape: tuple[int, int, int],
    voxels_per_job: int = NCC_VOXELS_PER_JOB,
    max_jobs: int = 5000,
    block=NCC_BLOCK,
) -> dict[str, list[Tile]]:
    """The blocks of ``block`` voxels of a level of ``shape`` (:func:`foreground_ncc`'s),
    batched for about ``voxels_per_job`` voxels per job, at most ``max_jobs`` jobs
    (:func:`~bigstream_core.tiling.budget_batches`): batch id -> blocks."""
    return budget_batches(shape, block, voxels_per_job, max_jobs)


NCC_SUMS = ("n", "sum_a", "sum_b", "sum_aa", "sum_bb", "sum_ab")
"""The partial sums of a foreground NCC (:func:`region_ncc_sums`), over the fixed
foreground voxels ``a`` and the moving voxels ``b`` pulled onto them."""

IDENTITY_STAGE = "none (before registration)"


def with_identity(stages: list[tuple[str, PointMap]]) -> list[tuple[str, PointMap]]:
    """The stages :func:`stage_accuracy` measures: before registration (the identity), then
    ``stages`` (name, transform) in order."""
    return [(IDENTITY_STAGE, lambda p: p), *stages]


def foreground_level(fixed: Image) -> float:
    """The fixed foreground's level: the Otsu threshold of a strided sample of at most
    :data:`~bigstream_core.masks.SAMPLE_VOXELS` voxels (the one value if the sample is
    flat), read block by block. Voxels above it are foreground."""
    sample = strided_sample(fixed, sample_stride(fixed.shape, least=4))
    return float(threshold_otsu(sample.astype(float)) if np.ptp(sample) else sample[0])


def region_ncc_sums(
    fixed: Image,
    moving: Image,
    transforms: list[PointMap],
    region: tuple[slice, slice, slice],
    level: float,
    step: int = 2,
) -> np.ndarray:
    """The partial sums (:data:`NCC_SUMS`, float64) of the foreground NCC over one fixed-grid
    ``region``, one row per transform: over the fixed voxels ``a`` above ``level`` and the
    moving image pulled through the transform onto them, ``b`` (linear interpolation, the
    transform computed every ``step``-th voxel, see
    :func:`~bigstream_core.resample.transformed_voxels`). The fixed region is read once; a
    region without foreground is not resampled (its sums are 0). Summed over regions that
    partition the image and given to :func:`ncc_from_sums`, they make
    :func:`foreground_ncc`."""
    sums = np.zeros((len(transforms), len(NCC_SUMS)))
    a = fixed.read(region).astype(np.float64)
    mask = a > level
    if not mask.any():
        return sums
    a = a[mask]
    for row, transform in enumerate(transforms):
        b = resample_region(moving, transform, region, fixed.spacing, fixed.origin, 1, step=step)
        b = b[mask].astype(np.float64)
        sums[row] = (a.size, a.sum(), b.sum(), a @ a, b @ b, a @ b)
    return sums


def ncc_from_sums(sums) -> float:
    """The NCC of the partial sums ``sums`` (:data:`NCC_SUMS`): one row, or rows of several
    regions (summed first)."""
    n, sa, sb, saa, sbb, sab = np.sum(np.reshape(sums, (-1, len(NCC_SUMS))), axis=0)
    covariance = sab - sa * sb / n
    return covariance / np.sqrt((saa - sa * sa / n) * (sbb - sb * sb / n))


def foreground_ncc(
    fixed: Image, moving: Image, transform: PointMap, block=NCC_BLOCK, step: int = 2
) -> float:
    """Normalised cross-correlation of ``fixed`` and ``moving(transform(x))`` over the fixed
    foreground (above :func:`foreground_level`), accumulated one fixed-grid block of
    ``block`` voxels (z, y, x) at a time (:func:`region_ncc_sums`), so memory follows the
    block, not the image (the transform computed every ``step``-th voxel, see
    :func:`~bigstream_core.resample.transformed_voxels`)."""
    level = foreground_level(fixed)
    sums = np.zeros(len(NCC_SUMS))
    for tile in tile_grid(fixed.shape, block):
        sums += region_ncc_sums(fixed, moving, [transform], tile.slices("core"), level, step)[0]
    return ncc_from_sums(sums)


def batch_ncc_sums(
    fixed: Image,
    moving: Image,
    stages: list[tuple[str, PointMap]],
    regions: list[tuple[slice, slice, slice]],
    level: float,
    step: int = 2,
) -> dict[str, list[float]]:
    """Per stage (name, transform) the partial sums (:data:`NCC_SUMS`) of the foreground
    NCC over ``regions`` (fixed-grid boxes, one after the other): one job's share of
    :func:`foreground_ncc` for every stage at once."""
    sums = np.zeros((len(stages), len(NCC_SUMS)))
    transforms = [transform for _, transform in stages]
    for region in regions:
        sums += region_ncc_sums(fixed, moving, transforms, region, level, step)
    return {
        name: [float(value) for value in row] for (name, _), row in zip(stages, sums, strict=True)
    }


def reduce_ncc_records(records: list[dict], level: float, blocks: int) -> dict[str, float]:
    """Per stage the foreground NCC from the records of the jobs that share the low-res
    blocks (each ``{"level", "blocks": [ids], "sums": {stage: NCC_SUMS}}``): they must all
    have used ``level`` and the same stages, and cover ``blocks`` blocks, each once."""
    ids = [block for record in records for block in record["blocks"]]
    if len(ids) != blocks or len(set(ids)) != blocks:
        raise ValueError(f"the NCC records cover {len(set(ids))} distinct of {len(ids)} "
                         f"blocks: expected each of {blocks} once")  # fmt: skip
    stages = list(records[0]["sums"])
    for record in records:
        if record["level"] != level or list(record["sums"]) != stages:
            raise ValueError(f"an NCC record of foreground level {record['level']} and stages "
                             f"{list(record['sums'])}: expected {level} and {stages}")  # fmt: skip
    return {
        stage: float(ncc_from_sums([record["sums"][stage] for record in records]))
        for stage in stages
    }


def stage_accuracy(
    stages: list[tuple[str, PointMap]],
    truth: PointMap,
    images: dict[str, dict[str, Image]],
    ncc: dict[str, float] | None = None,
) -> dict:
    """Accuracy before registration and after each stage: TRE (µm) over the high-res
    fixed foreground and NCC over the low-res foreground (:func:`foreground_ncc`, or given
    per stage name in ``ncc``, e.g. reduced from block jobs by :func:`reduce_ncc_records`).
    The last stage's figures are also given at the top level."""
    rows = []
    for name, transform in with_identity(stages):
        tre = evaluate(transform, truth, images["fixed"]["highres"], images["moving"]["highres"])
        if ncc is None:
            value = foreground_ncc(images["fixed"]["lowres"], images["moving"]["lowres"], transform)
        else:
            value = ncc[name]
        rows.append({"transform": name, **tre, "ncc_fg": value})
    return {**rows[-1], "stages": rows}
