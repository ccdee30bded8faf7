"""Writers: N5 (tensorstore), plain Zarr, and OME-Zarr 0.4 / 0.5 (whole, or created empty,
filled region by region by separate jobs, level by level, then finished with its metadata).
Each works block by block and returns the opened image."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from bigstream_core.io.base import _SPATIAL, ImageError, _as_dask, _read_json, _where
from bigstream_core.io.image import Image, open_image
from bigstream_core.io.n5 import N5_VERSION, _file_kvstore
from bigstream_core.io.pyramid import (
    NGFF_ZARR_FORMAT,
    create_level,
    downsample_region,
    level_factors,
    ome_dataset,
    pyramid_shapes,
)
from bigstream_core.io.units import _check_spacing, _number

if TYPE_CHECKING:  # tensorstore is imported where used: a job's start-up stays short
    import tensorstore as ts


class _TensorstoreTarget:
    """`dask.array.store` target writing each block into a z, y, x tensorstore view."""

    def __init__(self, view: ts.TensorStore):
        self._view = view

    def __setitem__(self, region: tuple[slice, ...], block: np.ndarray) -> None:
        self._view[region].write(block).result()


def write_n5(
    array: Any,
    path: str | os.PathLike,
    dataset: str,
    pixel_resolution: tuple[float, float, float],
    downsampling_factors: tuple[int, int, int] = (1, 1, 1),
    chunks: tuple[int, int, int] | None = None,
    compression: str | dict = "gzip",
) -> Image:
    """Write a z, y, x array as an N5 dataset, one block at a time, and open it.

    Args:
        array: numpy or dask array, z y x.
        path: N5 container folder; created (with root ``{"n5": ...}``) if new.
        dataset: dataset path inside the container; an existing one is replaced.
        pixel_resolution: full-resolution voxel spacing, z y x µm.
        downsampling_factors: z y x factors of this level relative to full resolution; the
            stored array's spacing is ``pixel_resolution * downsampling_factors``.
        chunks: N5 block shape z y x (default `DEFAULT_CHUNKS`, clipped to the shape).
        compression: N5 compression type (``"gzip"``, ``"raw"``, ``"zstd"``, ``"blosc"``, ...)
            or a tensorstore N5 compression object.

    All metadata is written x y z (N5 order): ``dimensions``, ``blockSize``,
    ``pixelResolution`` ``{"dimensions": [x, y, z], "unit": "um"}``, ``downsamplingFactors``.
    """
    import dask.array as da
    import tensorstore as ts

    path = os.fspath(path)
    where = _where(path, dataset)
    resolution = _check_spacing(pixel_resolution, f"{where}: pixel_resolution")
    factors = [int(f) for f in downsampling_factors]
    if len(factors) != 3 or min(factors) < 1:
        raise ImageError(
            f"{where}: downsampling_factors {downsampling_factors!r}; expected 3 integers >= 1"
        )
    data = _as_dask(array, chunks, where)
    _ensure_n5_root(path)
    metadata = {
        "dimensions": list(data.shape[::-1]),
        "blockSize": [c[0] for c in data.chunks][::-1],
        "dataType": np.dtype(data.dtype).name,
        "compression": {"type": compression} if isinstance(compression, str) else compression,
        "pixelResolution": {"dimensions": list(resolution[::-1]), "unit": "um"},
        "downsamplingFactors": factors[::-1],
    }
    spec = {"driver": "n5", "kvstore": _file_kvstore(path), "path": dataset, "metadata": metadata}
    store = ts.open(spec, create=True, delete_existing=True).result()
    da.store(data, _TensorstoreTarget(store.T), lock=False)
    return open_image(path, dataset)


def _ensure_n5_root(path: str) -> None:
    """Create the N5 container folder and root attributes (``{"n5": version}``) if missing."""
    os.makedirs(path, exist_ok=True)
    root = os.path.join(path, "attributes.json")
    attrs = _read_json(root) or {}
    if "n5" not in attrs:
        attrs["n5"] = N5_VERSION
        Path(root).write_text(json.dumps(attrs), encoding="utf-8")


def write_zarr(
    array: Any,
    path: str | os.PathLike,
    dataset: str | None = None,
    spacing: tuple[float, float, float] | None = None,
    chunks: tuple[int, int, int] | None = None,
    zarr_format: int = 3,
) -> Image:
    """Write a z, y, x array as a plain zarr array (v2 or v3), one chunk at a time, and open it.

    Args:
        array: numpy or dask array, z y x.
        path: zarr container folder. With `dataset` None the root is the array (replaced if
            present); otherwise the root is a group and `dataset` an array path in it.
        dataset: array path inside the container group; an existing one is replaced.
        spacing: z y x µm, stored as attribute ``spacing`` when given. Without it the array has
            no spacing metadata and the returned Image reports spacing (1, 1, 1): voxel units.
        chunks: z y x chunk shape (default `DEFAULT_CHUNKS`, clipped to the shape).
        zarr_format: 2 or 3.
    """
    import dask.array as da

    path = os.fspath(path)
    where = _where(path, dataset)
    attributes = {}
    if spacing is not None:
        attributes["spacing"] = list(_check_spacing(spacing, f"{where}: spacing"))
    data = _as_dask(array, chunks, where)
    options = {
        "shape": data.shape,
        "dtype": data.dtype,
        "chunks": tuple(c[0] for c in data.chunks),
        "attributes": attributes,
        "overwrite": True,
    }
    if dataset:
        group = zarr.open_group(path, mode="a", zarr_format=zarr_format)
        target = group.create_array(dataset, **options)
    else:
        target = zarr.create_array(path, zarr_format=zarr_format, **options)
    da.store(data, target, lock=False)
    return open_image(path, dataset, spacing=(1.0, 1.0, 1.0) if spacing is None else None)


def write_ome_zarr(
    path: str | os.PathLike,
    array: Any,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float] = (0, 0, 0),
    chunks: tuple[int, int, int] | None = None,
    levels: int | None = None,
    name: str | None = None,
    attrs: dict | None = None,
    version: str = "0.4",
) -> Image:
    """Write a z, y, x array as an OME-NGFF multiscale image and open level "0".

    Level k is the 2x mean-downsampling of level k - 1 (factor 1 along an axis of length 1; an
    odd length is padded by repeating the edge voxel), computed block by block from level
    k - 1 as written. Integer types are rounded back to the input dtype.

    Args:
        path: output folder; replaced if present.
        array: numpy or dask array, z y x.
        spacing: z y x µm of level 0.
        origin: z y x µm position of voxel (0, 0, 0) of level 0. Level k's origin is level
            k - 1's plus (f - 1) / 2 * its spacing (f: the factor per axis).
        chunks: z y x chunk shape (default `DEFAULT_CHUNKS`, clipped to each level's shape).
        levels: number of levels; None adds levels until every axis is under 64 voxels, at most 5.
        name: multiscale name (default: the folder name).
        attrs: extra group attributes (e.g. provenance), merged in beside the OME metadata.
        version: NGFF version, "0.4" (Zarr v2) or "0.5" (Zarr v3).
    """
    import dask.array as da

    data = _as_dask(array, chunks, os.fspath(path))
    group = create_ome_zarr(path, data.shape, data.dtype, chunks, levels=levels, version=version)
    da.store(data.rechunk(group["0"].chunks), group["0"], lock=False)
    for level in range(1, len(list(group.array_keys()))):
        downsample_level(path, level)
    return finish_ome_zarr(path, spacing, origin, name, attrs)


def create_ome_zarr(
    path: str | os.PathLike,
    shape: tuple[int, int, int],
    dtype: Any,
    chunks: tuple[int, int, int] | None = None,
    *,
    channels: int | None = None,
    levels: int | None = None,
    version: str = "0.4",
    shard: tuple[int, int, int] | None = None,
) -> zarr.Group:
    """Create (replace) an OME-Zarr folder with every level "0", "1", ... empty (shapes from
    :func:`~bigstream_core.io.pyramid.pyramid_shapes`); no multiscale metadata yet.

    For writers that fill level 0 region by region (each writing only the chunks, or shards,
    it owns), then each level from the one below (:func:`downsample_level`, by regions too),
    before :func:`finish_ome_zarr` adds the metadata. Until then the folder is not a valid
    OME-Zarr image, so a half-written result never looks complete.

    Args:
        shape: z, y, x voxels of level 0.
        channels: the length of a leading ``c`` axis; None: a z, y, x image.
        version: "0.4" (Zarr v2) or "0.5" (Zarr v3).
        shard: z, y, x voxels of a shard (0.5 only; a multiple of `chunks`): one file per
            shard instead of one per chunk.
    """
    path = os.fspath(path)
    if version not in NGFF_ZARR_FORMAT:
        raise ImageError(f"{path}: OME-Zarr version {version!r}; expected one of "
                         f"{', '.join(NGFF_ZARR_FORMAT)}")  # fmt: skip
    if shard is not None and version == "0.4":
        raise ImageError(f"{path}: shards need OME-Zarr 0.5 (Zarr v3); 0.4 was asked for")
    group = zarr.open_group(path, mode="w", zarr_format=NGFF_ZARR_FORMAT[version])
    for level, level_shape in enumerate(pyramid_shapes(tuple(shape), levels, path)):
        create_level(group, str(level), level_shape, np.dtype(dtype), chunks, channels, shard)
    return group


OME_KEYS = ("multiscales", "omero", "ome")
"""Group attributes that make a folder an OME-Zarr image (0.4: the first two; 0.5: ``ome``)."""


def withdraw_ome_metadata(path: str | os.PathLike) -> bool:
    """Remove the OME metadata (:data:`OME_KEYS`) of an OME-Zarr folder whose levels are
    about to be rewritten, so no reader takes a half-rewritten store for a finished image;
    :func:`finish_ome_zarr` writes it back. Other attributes (provenance) stay. Returns
    whether there was any (each block job calls it: only the first one rewrites them)."""
    group = zarr.open_group(os.fspath(path), mode="r+")
    attrs = group.attrs.asdict()
    if not any(key in attrs for key in OME_KEYS):
        return False
    group.attrs.put({key: value for key, value in attrs.items() if key not in OME_KEYS})
    return True


def downsample_level(path: str | os.PathLike, level: int, core=None) -> None:
    """Fill the z, y, x region `core` (whole write units; None: all) of level `level` of an
    OME-Zarr folder made by :func:`create_ome_zarr` from level `level` - 1."""
    group = zarr.open_group(os.fspath(path), mode="r+")
    downsample_region(group[str(level - 1)], group[str(level)], core)


def finish_ome_zarr(
    path: str | os.PathLike,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float] = (0, 0, 0),
    name: str | None = None,
    attrs: dict | None = None,
    labels: list[str] | None = None,
) -> Image:
    """Write the OME metadata of a filled pyramid (:func:`create_ome_zarr`): ``multiscales``
    (NGFF 0.4, or 0.5 under ``ome`` on Zarr v3) and, with a channel axis, ``omero`` channels
    named `labels` with contrast limits taken from the data (:func:`channel_windows`).
    Returns level "0" (its first channel)."""
    path = os.fspath(path)
    spacing = _check_spacing(spacing, f"{path}: spacing")
    origin = tuple(_number(o, f"{path}: origin {origin!r}") for o in origin)
    if len(origin) != 3:
        raise ImageError(f"{path}: origin {origin!r}; expected 3 numbers (z y x, µm)")
    group = zarr.open_group(path, mode="r+")
    arrays = [group[str(level)] for level in range(len(list(group.array_keys())))]
    channels = arrays[0].ndim == 4
    if channels and len(labels or []) != arrays[0].shape[0]:
        raise ImageError(f"{path}: {arrays[0].shape[0]} channels, labels {labels!r}; expected "
                         "one label per channel")  # fmt: skip
    datasets = [ome_dataset("0", spacing, origin, channels)]
    for k in range(1, len(arrays)):
        factors = level_factors(arrays[k - 1].shape[-3:])
        origin = tuple(
            o + (f - 1) / 2 * s for o, f, s in zip(origin, factors, spacing, strict=True)
        )
        spacing = tuple(s * f for s, f in zip(spacing, factors, strict=True))
        datasets.append(ome_dataset(str(k), spacing, origin, channels))
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in _SPATIAL]
    multiscale = {
        "name": name or Path(path).name,
        "axes": [{"name": "c", "type": "channel"}, *axes] if channels else axes,
        "datasets": datasets,
        "type": "mean",
    }
    ome = {"multiscales": [multiscale]}
    if channels:
        ome["omero"] = omero_metadata(labels, channel_windows(arrays[-1]))
    if group.metadata.zarr_format == 2:
        multiscale["version"] = "0.4"
        group.attrs.update({**(attrs or {}), **ome})
    else:
        group.attrs.update({**(attrs or {}), "ome": {"version": "0.5", **ome}})
    return open_image(path, "0", channel=0 if channels else None)


CHANNEL_COLOURS = ("00FF00", "FF00FF", "00FFFF", "FFFF00", "FF0000", "0000FF", "FFFFFF")
"""``omero`` colours of channels 0, 1, ... (repeated beyond the last)."""
WINDOW_SAMPLES = 1 << 22
"""Most voxels per channel read to choose its contrast limits."""


def channel_windows(level: zarr.Array) -> list[dict[str, float]]:
    """``omero`` contrast limits per channel of a (c, z, y, x) level (the coarsest is
    enough): ``start``/``end`` the 0.1 and 99.9 percentiles of its nonzero voxels (0 is
    "no data") in a strided sample of at most :data:`WINDOW_SAMPLES` voxels; ``min``/``max``
    the dtype's range (integers) or the sample's (floats)."""
    stride = max(1, math.ceil((math.prod(level.shape[1:]) / WINDOW_SAMPLES) ** (1 / 3)))
    windows = []
    for channel in range(level.shape[0]):
        sample = np.asarray(level[channel, ::stride, ::stride, ::stride]).ravel()
        values = sample[sample != 0] if np.any(sample != 0) else sample
        start, end = (float(v) for v in np.percentile(values, [0.1, 99.9]))
        if np.issubdtype(level.dtype, np.integer):
            low, high = float(np.iinfo(level.dtype).min), float(np.iinfo(level.dtype).max)
        else:
            low, high = float(values.min()), float(values.max())
        windows.append({"min": low, "max": high, "start": start, "end": max(end, start)})
    return windows


def omero_metadata(labels: list[str], windows: list[dict[str, float]]) -> dict:
    """The ``omero`` block: one channel per label, coloured in turn, with its window."""
    return {
        "channels": [
            {"label": label, "color": CHANNEL_COLOURS[index % len(CHANNEL_COLOURS)],
             "window": window, "active": True}
            for index, (label, window) in enumerate(zip(labels, windows, strict=True))
        ],
        "rdefs": {"model": "color"},
    }  # fmt: skip
