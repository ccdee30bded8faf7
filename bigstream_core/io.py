"""Open, read and write 3D volumes stored as N5, Zarr (v2 / v3) or OME-Zarr.

Every array this module hands out is indexed z, y, x (C order, slowest axis first), and every
geometric value is in micrometres (µm) in that same z, y, x order: the physical position of voxel
index ``i`` is ``origin + i * spacing``.

N5 stores its metadata (``dimensions``, ``blockSize``, ``pixelResolution``,
``downsamplingFactors``) in x, y, z order, and tensorstore's ``n5`` driver presents the array in
x, y, z order too; this module reverses both here, at the I/O boundary, and nowhere else.

- N5 is read and written through tensorstore's ``n5`` driver.
- Zarr v2 / v3 and OME-Zarr (NGFF 0.4 on Zarr v2, NGFF 0.5 on Zarr v3) go through zarr-python 3.

`open_image` reads metadata only (no voxel data), so it is cheap enough to call while a
Snakefile is parsed. Voxels are read on demand with `Image.read` or lazily with `Image.to_dask`.
The writers work block by block: memory stays bounded by a few storage chunks.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass, field, fields
from functools import cached_property
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numcodecs
import numpy as np
import zarr

from bigstream_core.tiling import tile_grid

if TYPE_CHECKING:  # dask and tensorstore are imported where used: a job's start-up stays short
    import dask.array as da
    import tensorstore as ts

__all__ = ["Image", "ImageError", "open_image", "write_n5", "write_ome_zarr", "write_zarr"]

DEFAULT_CHUNKS = (64, 64, 64)
"""Storage chunk shape (z, y, x voxels) of written arrays, clipped to the array shape."""

N5_VERSION = "2.0.0"
"""Version written to a new N5 container's root ``attributes.json`` (zarr 2's N5Store wrote it)."""

OME_COMPRESSOR = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
"""Codec of OME-Zarr levels: Blosc is the codec napari, neuroglancer and Fiji all decode."""

CHUNK_CONCURRENCY = 2
"""Chunks zarr-python 3 encodes or decodes at once in this process (set on import; zarr's
default is 10). Each is held whole while in flight, so the default made a read's peak grow
with the number of chunks it spans: a 128 x 245 x 257 part of an 8S field store (92 MB,
6 chunks) peaked at 409 MB with 10, 179 MB with 2, 136 MB with 1, in the same 0.25-0.36 s;
a 128 x 256 x 256 resample block's job went from 897 to 726 MB (benchmark pair 8S, 2026-11-27).
The tile jobs are single-threaded, so more in flight buys no speed."""
zarr.config.set({"async.concurrency": CHUNK_CONCURRENCY})

_MAX_LISTED = 10
_UNITS_IN_UM = {
    "um": 1.0,
    "µm": 1.0,  # micro sign
    "μm": 1.0,  # greek mu
    "micrometer": 1.0,
    "micrometre": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
}
_SPATIAL = ("z", "y", "x")
_ZARR_METADATA_FILES = (".zarray", ".zgroup", "zarr.json")
_N5_DTYPES = {
    "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64"
}  # fmt: skip


class ImageError(ValueError):
    """An image cannot be opened or written as asked; the message says where, what and why."""


def _where(path: str | os.PathLike, dataset: str | None) -> str:
    """`path` (dataset `dataset`), the location prefix of every error message."""
    return f"{os.fspath(path)} (dataset {dataset!r})" if dataset else os.fspath(path)


# --------------------------------------------------------------------------------------------
# The image handle


@dataclass(frozen=True)
class Image:
    """A 3D volume on disk: metadata in z, y, x order, voxels read on demand.

    Attributes:
        path: container path as given (N5, Zarr or OME-Zarr folder).
        dataset: dataset path inside the container (N5 dataset, zarr array path, OME-Zarr level
            path such as ``"0"``), or None when the container root is the array.
        format: ``"n5"``, ``"zarr"`` or ``"ome-zarr"``.
        shape: z, y, x voxels.
        dtype: voxel type.
        chunks: z, y, x storage chunk shape (the shard shape for sharded Zarr v3).
        spacing: z, y, x voxel spacing, µm.
        origin: z, y, x physical position (µm) of voxel (0, 0, 0).

    The opened store is cached per instance and dropped when pickled.
    """

    path: str
    dataset: str | None
    format: str
    shape: tuple[int, int, int]
    dtype: np.dtype
    chunks: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @cached_property
    def _source(self) -> Any:
        """The opened store, indexable in z, y, x order (tensorstore view or zarr array)."""
        import tensorstore as ts

        if self.format == "n5":
            spec = {"driver": "n5", "kvstore": _file_kvstore(self.path), "path": self.dataset or ""}
            return ts.open(spec, read=True, open=True).result().T
        array = zarr.open_array(store=self.path, path=self.dataset or "", mode="r")
        return _ZarrZYX(array)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_source"}

    def read(self, region: tuple[slice, slice, slice]) -> np.ndarray:
        """Voxels of `region` (z, y, x slices with step 1, within the shape) as a numpy array."""
        region = self._check_region(region)
        if self.format == "n5":
            return self._source[region].read().result()
        return self._source[region]

    def to_dask(self, chunks: Any = None) -> da.Array:
        """Lazy z, y, x dask array; `chunks` defaults to the storage chunks.

        Each dask block reads only its own region of the store, so it works with any scheduler
        (threads by default); the handle is re-opened per process when pickled.
        """
        import dask.array as da

        name = f"image-{self.format}-{_token(self)}"
        return da.from_array(
            self,
            chunks=self.chunks if chunks is None else chunks,
            name=name,
            getitem=Image.read,
            asarray=False,
            meta=np.empty((0, 0, 0), dtype=self.dtype),
        )

    def _check_region(self, region: tuple[slice, slice, slice]) -> tuple[slice, slice, slice]:
        """`region` with explicit bounds; ImageError unless 3 in-bounds slices of step 1."""
        where = _where(self.path, self.dataset)
        if len(region) != 3 or not all(isinstance(s, slice) for s in region):
            raise ImageError(f"{where}: region {region!r} is not 3 slices (z, y, x)")
        checked = []
        for s, size, axis in zip(region, self.shape, _SPATIAL, strict=True):
            start = 0 if s.start is None else s.start
            stop = size if s.stop is None else s.stop
            if s.step not in (None, 1) or not 0 <= start <= stop <= size:
                raise ImageError(
                    f"{where}: region {s} on axis {axis} is outside [0, {size}) or has a step; "
                    "expected a slice with step 1 within the image"
                )
            checked.append(slice(start, stop))
        return tuple(checked)


def _token(image: Image) -> str:
    """Deterministic dask name token of an image's identity and metadata."""
    from dask.base import tokenize

    return tokenize(image.path, image.dataset, image.shape, str(image.dtype), image.chunks)


_IMAGE_FIELDS = {f.name for f in fields(Image)} - {"path"}


class _ZarrZYX:
    """A zarr array whose leading singleton non-spatial axes (OME-Zarr t / c) are dropped."""

    def __init__(self, array: zarr.Array):
        self._array = array
        self._lead = (0,) * (array.ndim - 3)

    def __getitem__(self, region: tuple[slice, slice, slice]) -> np.ndarray:
        return self._array[self._lead + tuple(region)]


def _file_kvstore(path: str | os.PathLike) -> dict:
    return {"driver": "file", "path": os.path.abspath(os.fspath(path))}


# --------------------------------------------------------------------------------------------
# Opening


def open_image(
    path: str | os.PathLike,
    dataset: str | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> Image:
    """Open a 3D volume from its metadata only (no voxel data is read).

    Args:
        path: N5, Zarr (v2 / v3) or OME-Zarr container folder; the format is detected from the
            files on disk.
        dataset: N5 dataset path, zarr array path, or OME-Zarr level path (``"0"``, ``"1"``,
            ...) or OME-Zarr group path (its finest level is opened). None: the container root
            is the array, or for OME-Zarr its finest level.
        spacing: z, y, x voxel spacing in µm of the opened array; overrides the metadata.

    Raises:
        ImageError: the path, the dataset, the dimensionality, the shape or the spacing is not
            usable; the message says which file, which dataset, what was found and expected.

    Example::

        fix = open_image("fixed.n5", "lowres")  # N5 attributes are x, y, z: reversed here
        fix.shape, fix.spacing, fix.origin      # z, y, x voxels; z, y, x µm; z, y, x µm
        block = fix.read((slice(0, 32), slice(0, 64), slice(0, 64)))  # numpy, z y x
    """
    path = os.fspath(path)
    dataset = (dataset.strip("/") or None) if dataset else None
    if not os.path.exists(path):
        raise ImageError(f"{_where(path, dataset)}: path does not exist")
    if _detect_format(path, dataset) == "n5":
        found = _open_n5(path, dataset)
    else:
        found = _open_zarr(path, dataset)
    where = _where(path, dataset)
    shape = found["shape"]
    if len(shape) != 3:
        raise ImageError(f"{where}: array has shape {shape} ({len(shape)}D); expected 3D (z, y, x)")
    if 0 in shape:
        raise ImageError(f"{where}: array has shape {shape} (z, y, x); expected no empty axis")
    if spacing is not None:
        found.update(_override_spacing(found.get("factors"), spacing, where))
    if found["spacing"] is None:
        raise ImageError(
            f"{where}: no voxel spacing in the metadata (looked for {found['looked_for']}); "
            "set `spacing` (z y x, µm) in the config for this image"
        )
    return Image(path=path, **{k: v for k, v in found.items() if k in _IMAGE_FIELDS})


def _override_spacing(factors: tuple | None, spacing: Any, where: str) -> dict:
    """Geometry with the user's spacing (this array's own, z y x µm) replacing the metadata's.

    For an N5 level with downsampling `factors` (z y x) the origin follows the override:
    (f - 1) / 2 * spacing / f.
    """
    spacing = _check_spacing(spacing, f"{where}: spacing from the config")
    if factors is None:
        return {"spacing": spacing}
    origin = tuple((f - 1) / 2 * s / f for s, f in zip(spacing, factors, strict=True))
    return {"spacing": spacing, "origin": origin}


def _detect_format(path: str, dataset: str | None) -> str:
    """``"n5"`` or ``"zarr"`` (plain or OME, decided later) from the files on disk."""
    target = os.path.join(path, dataset) if dataset else path
    for folder in dict.fromkeys([path, target]):
        n5_attrs = _read_json(os.path.join(folder, "attributes.json"))
        if n5_attrs is not None and ("n5" in n5_attrs or "dimensions" in n5_attrs):
            return "n5"
        if any(os.path.exists(os.path.join(folder, f)) for f in _ZARR_METADATA_FILES):
            return "zarr"
    if path.rstrip("/").endswith(".n5"):
        return "n5"
    raise ImageError(
        f"{_where(path, dataset)}: not a recognised container: found none of attributes.json "
        "(N5), .zarray / .zgroup (Zarr v2) or zarr.json (Zarr v3, OME-Zarr); "
        "expected an N5, Zarr or OME-Zarr folder"
    )


def _read_json(file: str) -> dict | None:
    """The JSON object in `file`, or None if there is no such file."""
    try:
        with open(file, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise ImageError(f"{file}: not valid JSON ({error})") from error


def _children(folder: str) -> str:
    """Up to ~10 sub-folder names of `folder` (datasets, groups or levels), for messages."""
    try:
        names = sorted(
            e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")
        )
    except FileNotFoundError:
        return "nothing (no such folder)"
    if not names:
        return "nothing"
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


def _missing(path: str, dataset: str | None, found: str) -> ImageError:
    """ImageError for a dataset that is not there, listing what its parent folder holds."""
    parent = os.path.dirname(dataset or "")
    folder = os.path.join(path, parent) if parent else path
    place = f"{parent!r}" if parent else "the container root"
    return ImageError(
        f"{_where(path, dataset)}: {found}; {place} holds: {_children(folder)}; "
        "expected the path of a 3D array (or OME-Zarr group / level)"
    )


# N5 ------------------------------------------------------------------------------------------


def _open_n5(path: str, dataset: str | None) -> dict:
    """Metadata of an N5 dataset, reversed to z, y, x."""
    where = _where(path, dataset)
    target = os.path.join(path, dataset) if dataset else path
    attrs = _read_json(os.path.join(target, "attributes.json")) or {}
    if "dimensions" not in attrs and not os.path.isdir(target):
        raise _missing(path, dataset, "not found")
    if "dimensions" not in attrs:
        raise ImageError(
            f"{where}: is a group, not a dataset; it holds: {_children(target)}; "
            "expected the path of an N5 dataset (attributes.json with `dimensions`)"
        )
    dims, block = attrs["dimensions"], attrs.get("blockSize", attrs["dimensions"])
    if attrs.get("dataType") not in _N5_DTYPES:
        raise ImageError(
            f"{where}: N5 dataType {attrs.get('dataType')!r}; expected one of {sorted(_N5_DTYPES)}"
        )
    factors = _n5_factors(attrs.get("downsamplingFactors", [1] * len(dims)), where)
    resolution = _n5_resolution_up_the_tree(path, dataset)
    image = {
        "dataset": dataset,
        "format": "n5",
        "shape": tuple(int(d) for d in reversed(dims)),
        "dtype": np.dtype(attrs["dataType"]),
        "chunks": tuple(int(b) for b in reversed(block)),
        "spacing": None,
        "origin": (0.0, 0.0, 0.0),
        "factors": factors,
        "looked_for": "pixelResolution / resolution on the N5 dataset and its parent groups",
    }
    if resolution is not None and len(dims) == 3:
        image["spacing"] = tuple(r * f for r, f in zip(resolution, factors, strict=True))
        image["origin"] = tuple((f - 1) / 2 * r for r, f in zip(resolution, factors, strict=True))
    return image


def _n5_factors(value: Any, where: str) -> tuple[float, ...]:
    """N5 ``downsamplingFactors`` (x y z) as positive z y x numbers."""
    if not isinstance(value, list) or not all(_is_positive(v) for v in value):
        raise ImageError(
            f"{where}: downsamplingFactors {value!r}; expected a list of positive numbers (x y z)"
        )
    return tuple(float(v) for v in reversed(value))


def _n5_resolution_up_the_tree(path: str, dataset: str | None) -> tuple[float, ...] | None:
    """Full-resolution z y x spacing (µm) from the dataset or its nearest parent group, or None."""
    parts = dataset.split("/") if dataset else []
    for depth in range(len(parts), -1, -1):
        group = "/".join(parts[:depth]) or None
        attrs = _read_json(os.path.join(path, *parts[:depth], "attributes.json")) or {}
        resolution = _resolution_from_attrs(attrs, _where(path, group))
        if resolution is not None:
            return resolution
    return None


def _resolution_from_attrs(attrs: dict, where: str) -> tuple[float, float, float] | None:
    """z y x µm from N5-style ``pixelResolution`` (list or {dimensions, unit}) or ``resolution``.

    Values are x y z; a plain list is taken as µm. None if neither attribute is present.
    """
    if "pixelResolution" in attrs:
        key, value = "pixelResolution", attrs["pixelResolution"]
        if isinstance(value, dict):
            values, unit = value.get("dimensions"), value.get("unit", "um")
        else:
            values, unit = value, "um"
    elif "resolution" in attrs:
        key, values, unit = "resolution", attrs["resolution"], attrs.get("units", "um")
    else:
        return None
    source = f"{where}: {key} {attrs[key]!r}"
    if not isinstance(values, list) or len(values) != 3:
        raise ImageError(f"{source}; expected 3 numbers (x y z)")
    units = unit if isinstance(unit, list) else [unit] * 3
    if len(units) != 3:
        raise ImageError(f"{source} with units {unit!r}; expected one unit or 3 (x y z)")
    in_um = [
        _number(v, source) * _unit_in_um(u, source) for v, u in zip(values, units, strict=True)
    ]
    return _check_spacing(in_um[::-1], source)


# Zarr / OME-Zarr ---------------------------------------------------------------------------------


def _open_zarr(path: str, dataset: str | None) -> dict:
    """Metadata of a plain zarr array or of an OME-Zarr level, z, y, x."""
    where = _where(path, dataset)
    try:
        node = zarr.open(store=path, path=dataset or "", mode="r")
    except (FileNotFoundError, zarr.errors.BaseZarrError) as error:
        raise _missing(path, dataset, "not found") from error
    if isinstance(node, zarr.Group):
        multiscale = _multiscale(node.attrs)
        if multiscale is None:
            raise ImageError(
                f"{where}: is a zarr group without OME-Zarr `multiscales`; "
                f"it holds: {', '.join(sorted(node.keys())[:_MAX_LISTED]) or 'nothing'}; "
                "expected the path of a 3D array or of an OME-Zarr image group"
            )
        finest = next(iter(_level_paths(multiscale)), None)
        if finest not in node:
            raise ImageError(
                f"{where}: OME-Zarr finest level {finest!r} (first of multiscales datasets) "
                "has no array; expected an array at that path"
            )
        return _open_ome_level(path, dataset, multiscale, finest, node[finest])
    parent, _, level = (dataset or "").rpartition("/")
    group = _group_or_none(path, parent) if dataset else None
    multiscale = _multiscale(group.attrs) if group is not None else None
    if multiscale is not None and level in _level_paths(multiscale):
        return _open_ome_level(path, parent or None, multiscale, level, node)
    return _plain_zarr(path, dataset, node)


def _group_or_none(path: str, group: str) -> zarr.Group | None:
    try:
        return zarr.open_group(store=path, path=group, mode="r")
    except (FileNotFoundError, zarr.errors.BaseZarrError):
        return None


def _multiscale(attrs: Any) -> dict | None:
    """The first NGFF multiscale (0.4: top-level ``multiscales``; 0.5: under ``ome``), or None."""
    attrs = dict(attrs)
    value = attrs.get("ome", {}).get("multiscales", attrs.get("multiscales"))
    return value[0] if isinstance(value, list) and value and isinstance(value[0], dict) else None


def _level_paths(multiscale: dict) -> list[str]:
    """Level paths of a multiscale, finest first."""
    return [d.get("path") for d in multiscale.get("datasets") or [] if isinstance(d, dict)]


def _plain_zarr(path: str, dataset: str | None, array: zarr.Array) -> dict:
    """Plain zarr: spacing from attribute ``spacing`` (z y x µm) or N5-style ``pixelResolution``."""
    where = _where(path, dataset)
    attrs = dict(array.attrs)
    if "spacing" in attrs:
        spacing = _check_spacing(attrs["spacing"], f"{where}: attribute spacing")
    else:
        spacing = _resolution_from_attrs(attrs, where)
    return {
        "dataset": dataset,
        "format": "zarr",
        "shape": tuple(array.shape),
        "dtype": np.dtype(array.dtype),
        "chunks": tuple(array.shards or array.chunks),
        "spacing": spacing,
        "origin": (0.0, 0.0, 0.0),
        "looked_for": "attribute `spacing` (z y x µm) or `pixelResolution` on the zarr array",
    }


def _open_ome_level(
    path: str, group_path: str | None, multiscale: dict, level: str, array: zarr.Array
) -> dict:
    """Metadata of `array`, level `level` of `multiscale` in the group at `group_path`.

    Physical position = (multiscale scale * (level scale * index + level translation)
    + multiscale translation), converted from the axes' unit to µm.
    """
    dataset = _join(group_path, level)
    where = _where(path, dataset)
    levels = _level_paths(multiscale)
    lead, factors = _ome_axes(multiscale, array.shape, where)
    factors = np.array(factors)
    scale, translation = _ome_transform(multiscale["datasets"][levels.index(level)], lead, where)
    global_scale, global_translation = _ome_transform(multiscale, lead, f"{where} (multiscale)")
    global_scale = np.ones(3) if global_scale is None else np.array(global_scale)
    spacing = None
    if scale is not None:
        spacing = _check_spacing(
            list(np.multiply(scale, global_scale) * factors),
            f"{where}: OME-Zarr scale {scale} x multiscale scale {list(global_scale)}",
        )
    origin = (np.multiply(translation or 0.0, global_scale) + (global_translation or 0.0)) * factors
    return {
        "dataset": dataset,
        "format": "ome-zarr",
        "shape": tuple(array.shape[lead:]),
        "dtype": np.dtype(array.dtype),
        "chunks": tuple((array.shards or array.chunks)[lead:]),
        "spacing": spacing,
        "origin": tuple(float(o) for o in origin),
        "looked_for": "a `scale` coordinateTransformation on the OME-Zarr level",
    }


def _join(group: str | None, name: str | None) -> str | None:
    return "/".join(p for p in (group, name) if p) or None


def _ome_axes(multiscale: dict, shape: tuple, where: str) -> tuple[int, tuple[float, ...]]:
    """Index of the first spatial axis and the z y x unit-to-µm factors; checks axes vs shape.

    Requires the last three axes to be z, y, x (space) and any leading axis (time / channel)
    to have length 1.
    """
    axes = multiscale.get("axes") or [{"name": n, "type": "space"} for n in _SPATIAL]
    axes = [a if isinstance(a, dict) else {"name": a} for a in axes]
    names = [str(a.get("name", "")).lower() for a in axes]
    expected = "axes ending in z, y, x (space), after at most singleton time / channel axes"
    if len(axes) != len(shape) or len(axes) < 3:
        raise ImageError(
            f"{where}: axes {names} for an array of shape {shape}; expected {expected}"
        )
    lead = len(axes) - 3
    spatial_ok = names[lead:] == list(_SPATIAL) and all(
        a.get("type", "space") == "space" for a in axes[lead:]
    )
    lead_ok = all(a.get("type") != "space" for a in axes[:lead]) and all(
        n == 1 for n in shape[:lead]
    )
    if not (spatial_ok and lead_ok):
        raise ImageError(
            f"{where}: axes {names} ({[a.get('type') for a in axes]}) with shape {shape}; "
            f"expected {expected}"
        )
    factors = tuple(
        _unit_in_um(a.get("unit", "micrometer"), f"{where}: axis {a.get('name')}")
        for a in axes[lead:]
    )
    return lead, factors


def _ome_transform(owner: dict, lead: int, where: str) -> tuple[list | None, list | None]:
    """z y x ``scale`` and ``translation`` of an NGFF coordinateTransformations list (or None)."""
    scale = translation = None
    for transform in owner.get("coordinateTransformations") or []:
        kind = transform.get("type")
        if kind == "identity":
            continue
        if kind not in ("scale", "translation") or kind not in transform:
            raise ImageError(
                f"{where}: coordinateTransformation {transform!r}; "
                "expected inline `scale` / `translation` lists"
            )
        values = transform[kind]
        if not isinstance(values, list) or len(values) != lead + 3:
            raise ImageError(f"{where}: {kind} {values!r}; expected {lead + 3} numbers")
        numbers = [_number(v, f"{where}: {kind} {values!r}") for v in values[lead:]]
        if kind == "scale":
            scale = numbers
        else:
            translation = numbers
    return scale, translation


# Values ------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    """A finite real number (not a bool)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def _is_positive(value: Any) -> bool:
    return _is_number(value) and value > 0


def _number(value: Any, source: str) -> float:
    if not _is_number(value):
        raise ImageError(f"{source}: {value!r} is not a finite number")
    return float(value)


def _unit_in_um(unit: Any, source: str) -> float:
    """Micrometres per `unit`; ImageError for anything but µm or nm spellings."""
    factor = _UNITS_IN_UM.get(str(unit).strip().lower())
    if factor is None:
        raise ImageError(
            f"{source}: unit {unit!r}; expected micrometres (um, µm, micrometer, microns) "
            "or nanometres (nm, nanometer)"
        )
    return factor


def _check_spacing(value: Any, source: str) -> tuple[float, float, float]:
    """`value` as 3 positive finite floats, else ImageError naming `source`."""
    values = list(value) if isinstance(value, list | tuple | np.ndarray) else None
    if values is None or len(values) != 3 or not all(map(_is_positive, values)):
        raise ImageError(f"{source}: spacing {value!r}; expected 3 positive numbers (z y x, µm)")
    return tuple(float(v) for v in values)


# --------------------------------------------------------------------------------------------
# Writing


def _as_dask(array: Any, chunks: tuple[int, int, int] | None, where: str) -> da.Array:
    """`array` (numpy or dask, z y x) as a dask array chunked like the storage chunks."""
    import dask.array as da

    if not isinstance(array, da.Array):
        array = np.asarray(array)
    if array.ndim != 3 or 0 in array.shape:
        raise ImageError(
            f"{where}: array to write has shape {tuple(array.shape)}; "
            "expected a 3D (z, y, x) array with no empty axis"
        )
    chunks = _storage_chunks(array.shape, chunks)
    if isinstance(array, da.Array):
        return array.rechunk(chunks)
    return da.from_array(array, chunks=chunks)


def _storage_chunks(shape: tuple[int, ...], chunks: tuple[int, int, int] | None) -> tuple:
    """Chunk shape z y x: `chunks` (default `DEFAULT_CHUNKS`) clipped to `shape`."""
    chunks = DEFAULT_CHUNKS if chunks is None else tuple(chunks)
    return tuple(max(1, min(int(c), int(s))) for c, s in zip(chunks, shape, strict=True))


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


def _ome_dataset(level_path: str, spacing: tuple, origin: tuple) -> dict:
    return {
        "path": level_path,
        "coordinateTransformations": [
            {"type": "scale", "scale": [float(s) for s in spacing]},
            {"type": "translation", "translation": [float(o) for o in origin]},
        ],
    }


def _level_factors(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Downsampling factor per axis from a level of `shape`: 2, or 1 along a length-1 axis."""
    return tuple(2 if n > 1 else 1 for n in shape)


def _pyramid_levels(shape: tuple[int, ...], levels: int | None, where: str) -> int:
    """Number of pyramid levels: `levels`, or enough for every axis < 64 voxels (at most 5)."""
    if levels is not None:
        if not isinstance(levels, int) or levels < 1:
            raise ImageError(f"{where}: levels {levels!r}; expected an integer >= 1 or None")
        return levels
    count = 1
    while count < 5 and max(shape) >= 64:
        shape = _downsampled_shape(shape, _level_factors(shape))
        count += 1
    return count


def _downsampled_shape(shape: tuple[int, ...], factors: tuple[int, ...]) -> tuple[int, ...]:
    """Shape after block-mean downsampling by `factors` with edge padding (ceil division)."""
    return tuple(-(-n // f) for n, f in zip(shape, factors, strict=True))


def _create_ome_level(group: zarr.Group, name: str, shape, dtype, chunks: Any) -> zarr.Array:
    """An empty level `name` (Zarr v2, "/" chunk keys, Blosc-zstd, fill value 0)."""
    return group.create_array(
        name,
        shape=shape,
        dtype=dtype,
        chunks=_storage_chunks(shape, chunks),
        compressors=OME_COMPRESSOR,
        chunk_key_encoding={"name": "v2", "separator": "/"},
        fill_value=0,
        overwrite=True,
    )


def _write_downsampled_level(
    group: zarr.Group, name: str, source: zarr.Array, factors: tuple[int, ...], chunks: Any
) -> zarr.Array:
    """Level `name`: the block mean of `source` over `factors` (z y x; the far ends padded
    with their edge values), written one output chunk at a time and computed in slabs of
    about one source chunk, so memory stays a few chunks' whatever the image's size."""
    level = _create_ome_level(
        group, name, _downsampled_shape(source.shape, factors), source.dtype, chunks
    )
    planes = max(1, source.chunks[0] // factors[0])  # output planes per slab
    for tile in tile_grid(level.shape, level.chunks):
        (z0, z1), rows, columns = tile.core
        block = np.empty([stop - start for start, stop in tile.core], level.dtype)
        for start in range(z0, z1, planes):
            stop = min(start + planes, z1)
            block[start - z0 : stop - z0] = _block_mean(
                source, ((start, stop), rows, columns), factors
            )
        level[tile.slices("core")] = block
    return level


def _block_mean(source: zarr.Array, region: tuple, factors: tuple[int, ...]) -> np.ndarray:
    """Mean of `source` over `factors` for the output voxel ranges `region` (z y x), rounded
    and clipped to an integer dtype; summed view by view (one float64 output-sized array)."""
    wanted = [(start * f, stop * f) for (start, stop), f in zip(region, factors, strict=True)]
    read = tuple(slice(a, min(b, n)) for (a, b), n in zip(wanted, source.shape, strict=True))
    data = source[read]
    pad = [(0, b - a - (s.stop - s.start)) for (a, b), s in zip(wanted, read, strict=True)]
    if any(after for _, after in pad):
        data = np.pad(data, pad, mode="edge")
    total = np.zeros([stop - start for start, stop in region], np.float64)
    for offset in itertools.product(*(range(f) for f in factors)):
        total += data[tuple(slice(o, None, f) for o, f in zip(offset, factors, strict=True))]
    mean = total / math.prod(factors)
    if np.issubdtype(source.dtype, np.integer):
        info = np.iinfo(source.dtype)
        mean = np.clip(np.round(mean), info.min, info.max)
    return mean.astype(source.dtype)


# --------------------------------------------------------------------------------------------
# In-memory images (the Python API takes numpy arrays too)


@dataclass(frozen=True)
class ArrayImage(Image):
    """A numpy volume behind the :class:`Image` interface (z, y, x; spacing and origin in µm)."""

    data: np.ndarray | None = field(default=None, repr=False, compare=False)

    @cached_property
    def _source(self) -> Any:
        return self.data

    def to_dask(self, chunks: Any = None) -> da.Array:
        """The array as dask, chunked like ``chunks`` (default: the whole array in 64^3 blocks)."""
        import dask.array as da

        return da.from_array(self.data, chunks=self.chunks if chunks is None else chunks)


def array_image(
    data: np.ndarray,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> ArrayImage:
    """Wrap a 3D numpy array (z, y, x) with its voxel spacing and origin (µm) as an image."""
    data = np.asarray(data)
    if data.ndim != 3 or 0 in data.shape:
        raise ImageError(
            f"in-memory array has shape {data.shape}; expected a 3D (z, y, x) array with no "
            "empty axis"
        )
    return ArrayImage(
        path="<memory>",
        dataset=None,
        format="memory",
        shape=tuple(int(n) for n in data.shape),
        dtype=data.dtype,
        chunks=tuple(min(64, int(n)) for n in data.shape),
        spacing=_check_spacing(spacing, "spacing argument"),
        origin=tuple(float(v) for v in origin),
        data=data,
    )
