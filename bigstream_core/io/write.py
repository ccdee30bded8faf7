"""Writers: N5 (tensorstore), plain Zarr, and OME-Zarr (whole, or created empty and finished
after block writers filled level 0). Each works block by block and returns the opened image."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from bigstream_core.io.base import _SPATIAL, ImageError, _as_dask, _read_json, _where
from bigstream_core.io.image import Image, open_image
from bigstream_core.io.n5 import N5_VERSION, _file_kvstore
from bigstream_core.io.pyramid import (
    _create_ome_level,
    _level_factors,
    _ome_dataset,
    _pyramid_levels,
    _write_downsampled_level,
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
) -> Image:
    """Write a z, y, x array as an OME-NGFF 0.4 multiscale image (Zarr v2) and open level "0".

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
        attrs: extra group attributes (e.g. provenance), merged in beside ``multiscales``.
    """
    import dask.array as da

    data = _as_dask(array, chunks, os.fspath(path))
    level = create_ome_zarr(path, data.shape, data.dtype, chunks)
    da.store(data.rechunk(level.chunks), level, lock=False)
    return finish_ome_zarr(path, spacing, origin, chunks, levels, name, attrs)


def create_ome_zarr(
    path: str | os.PathLike,
    shape: tuple[int, int, int],
    dtype: Any,
    chunks: tuple[int, int, int] | None = None,
) -> zarr.Array:
    """Create (replace) an OME-Zarr folder with an empty level "0"; no multiscale metadata yet.

    For writers that fill level 0 block by block (each block writing only the chunks it
    owns) before :func:`finish_ome_zarr` adds the pyramid and the metadata. Until then the
    folder is not a valid OME-Zarr image, so a half-written result never looks complete.
    """
    group = zarr.open_group(os.fspath(path), mode="w", zarr_format=2)
    return _create_ome_level(group, "0", tuple(shape), np.dtype(dtype), chunks)


def finish_ome_zarr(
    path: str | os.PathLike,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float] = (0, 0, 0),
    chunks: tuple[int, int, int] | None = None,
    levels: int | None = None,
    name: str | None = None,
    attrs: dict | None = None,
) -> Image:
    """Add the pyramid (levels 1..n from level "0", block by block) and the OME metadata."""
    path = os.fspath(path)
    spacing = _check_spacing(spacing, f"{path}: spacing")
    origin = tuple(_number(o, f"{path}: origin {origin!r}") for o in origin)
    if len(origin) != 3:
        raise ImageError(f"{path}: origin {origin!r}; expected 3 numbers (z y x, µm)")
    group = zarr.open_group(path, mode="r+", zarr_format=2)
    level = group["0"]
    count = _pyramid_levels(level.shape, levels, path)
    datasets = [_ome_dataset("0", spacing, origin)]
    for k in range(1, count):
        factors = _level_factors(level.shape)
        level = _write_downsampled_level(group, str(k), level, factors, chunks)
        origin = tuple(
            o + (f - 1) / 2 * s for o, f, s in zip(origin, factors, spacing, strict=True)
        )
        spacing = tuple(s * f for s, f in zip(spacing, factors, strict=True))
        datasets.append(_ome_dataset(str(k), spacing, origin))
    multiscale = {
        "version": "0.4",
        "name": name or Path(path).name,
        "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in _SPATIAL],
        "datasets": datasets,
        "type": "mean",
    }
    group.attrs.update({**(attrs or {}), "multiscales": [multiscale]})
    return open_image(path, "0")
