"""The image handle: :class:`Image` (metadata z y x, voxels read on demand), :func:`open_image`
(format detected from the files, metadata only), and in-memory images for the Python API."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

from bigstream_core.io.base import _SPATIAL, _ZARR_METADATA_FILES, ImageError, _read_json, _where
from bigstream_core.io.n5 import _file_kvstore, _open_n5
from bigstream_core.io.units import _check_spacing
from bigstream_core.io.zarr_ome import _open_zarr

if TYPE_CHECKING:  # dask is imported where used: a job's start-up stays short
    import dask.array as da


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
        lead: for an OME-Zarr array with leading non-spatial axes (t, c), the index taken on
            each (the chosen channel on ``c``, 0 on a singleton axis); () otherwise.
        nonfinite: what :meth:`read` does with NaN or infinite voxels of a float image:
            ``"background"`` (read as 0, the value of no tissue, so no stage sees them and no
            output holds them) or ``"error"`` (:class:`ImageError` naming the image, the
            region and the count).

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
    lead: tuple[int, ...] = ()
    nonfinite: str = "background"

    @cached_property
    def _source(self) -> Any:
        """The opened store, indexable in z, y, x order (tensorstore view or zarr array)."""
        import tensorstore as ts

        if self.format == "n5":
            spec = {"driver": "n5", "kvstore": _file_kvstore(self.path), "path": self.dataset or ""}
            return ts.open(spec, read=True, open=True).result().T
        array = zarr.open_array(store=self.path, path=self.dataset or "", mode="r")
        return _ZarrZYX(array, self.lead)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_source"}

    def read(self, region: tuple[slice, slice, slice]) -> np.ndarray:
        """Voxels of `region` (z, y, x slices with step 1, within the shape) as a numpy array,
        NaN or infinite voxels handled as ``nonfinite`` says."""
        return self.read_with_holes(region)[0]

    def read_with_holes(
        self, region: tuple[slice, slice, slice]
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`read`, and where the stored voxels were NaN or infinite (bool, the
        region's shape; None where there are none, always for integer images)."""
        region = self._check_region(region)
        data = self._read_raw(region)
        if self.dtype.kind != "f":
            return data, None
        bad = ~np.isfinite(data)
        if not bad.any():
            return data, None
        if self.nonfinite == "error":
            bounds = ", ".join(
                f"{axis} {s.start}:{s.stop}" for axis, s in zip(_SPATIAL, region, strict=True)
            )
            raise ImageError(
                f"{_where(self.path, self.dataset)}: {int(bad.sum())} NaN or infinite voxels in "
                f"{bounds}; repair the image, or set the image's `nonfinite: background` to "
                "read them as 0 (background)"
            )
        data = np.array(data, copy=True)
        data[bad] = 0
        return data, bad

    def count_holes(self, holes: np.ndarray | None) -> int:
        """How many voxels a hole mask of :meth:`read_with_holes` marks (0 for None)."""
        return 0 if holes is None else int(holes.sum())

    def count_nonfinite(self) -> int:
        """How many voxels are NaN or infinite (0 for integer images), read chunk row by
        chunk row (memory: one z row of chunks)."""
        if self.dtype.kind != "f":
            return 0
        count = 0
        for z in range(0, self.shape[0], self.chunks[0]):
            rows = (slice(z, min(z + self.chunks[0], self.shape[0])), slice(None), slice(None))
            count += int((~np.isfinite(self._read_raw(self._check_region(rows)))).sum())
        return count

    def _read_raw(self, region: tuple[slice, slice, slice]) -> np.ndarray:
        """Voxels of a checked `region` as stored."""
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

    return tokenize(
        image.path, image.dataset, image.lead, image.shape, str(image.dtype), image.chunks
    )


_IMAGE_FIELDS = {f.name for f in fields(Image)} - {"path", "nonfinite"}
NONFINITE = ("background", "error")
"""The choices of :attr:`Image.nonfinite`."""


class _ZarrZYX:
    """A zarr array seen as z, y, x: its leading non-spatial axes (OME-Zarr t, c) indexed by
    ``lead`` (default 0 on each)."""

    def __init__(self, array: zarr.Array, lead: tuple[int, ...] = ()):
        self._array = array
        self._lead = tuple(lead) or (0,) * (array.ndim - 3)

    def __getitem__(self, region: tuple[slice, slice, slice]) -> np.ndarray:
        return self._array[self._lead + tuple(region)]


def open_image(
    path: str | os.PathLike,
    dataset: str | None = None,
    spacing: tuple[float, float, float] | None = None,
    channel: int | str | None = None,
    nonfinite: str = "background",
) -> Image:
    """Open a 3D volume from its metadata only (no voxel data is read).

    Args:
        path: N5, Zarr (v2 / v3) or OME-Zarr container folder; the format is detected from the
            files on disk.
        dataset: N5 dataset path, zarr array path, or OME-Zarr level path (``"0"``, ``"1"``,
            ...) or OME-Zarr group path (its finest level is opened). None: the container root
            is the array, or for OME-Zarr its finest level.
        spacing: z, y, x voxel spacing in µm of the opened array; overrides the metadata.
        channel: for an OME-Zarr image with a channel axis (``c``), the channel: an index or
            an ``omero.channels`` label (needed when there are several). The bioformats2raw
            layout (the image in the store's group ``0``) is found by itself.
        nonfinite: ``"background"`` or ``"error"``: what reading NaN or infinite voxels of a
            float image does (see :class:`Image`).

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
    if nonfinite not in NONFINITE:
        raise ImageError(f"{_where(path, dataset)}: nonfinite {nonfinite!r}; expected one of "
                         f"{', '.join(NONFINITE)}")  # fmt: skip
    if not os.path.exists(path):
        raise ImageError(f"{_where(path, dataset)}: path does not exist")
    if _detect_format(path, dataset) == "n5":
        if channel is not None:
            raise ImageError(f"{_where(path, dataset)}: `channel` {channel!r} given, but an N5 "
                             "dataset has no channel axis; expected no `channel`")  # fmt: skip
        found = _open_n5(path, dataset)
    else:
        found = _open_zarr(path, dataset, channel)
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
    return Image(path=path, nonfinite=nonfinite,
                 **{k: v for k, v in found.items() if k in _IMAGE_FIELDS})  # fmt: skip


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
