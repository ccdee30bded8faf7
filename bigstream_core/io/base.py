"""What every part of ``bigstream_core.io`` shares: the error type and its messages, reading
JSON metadata, storage chunk shapes, and zarr-python's chunk concurrency."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr

if TYPE_CHECKING:  # dask is imported where used: a job's start-up stays short
    import dask.array as da


DEFAULT_CHUNKS = (64, 64, 64)
"""Storage chunk shape (z, y, x voxels) of written arrays, clipped to the array shape."""


CHUNK_CONCURRENCY = 2
"""Chunks zarr-python 3 encodes or decodes at once in this process (set on import; zarr's
default is 10). Each is held whole while in flight, so the default made a read's peak grow
with the number of chunks it spans: a 128 x 245 x 257 part of an 8S field store (92 MB,
6 chunks) peaked at 409 MB with 10, 179 MB with 2, 136 MB with 1, in the same 0.25-0.36 s;
a 128 x 256 x 256 resample block's job went from 897 to 726 MB (benchmark pair 8S, 2026-11-27).
The tile jobs are single-threaded, so more in flight buys no speed."""
zarr.config.set({"async.concurrency": CHUNK_CONCURRENCY})


_MAX_LISTED = 10
_SPATIAL = ("z", "y", "x")
_ZARR_METADATA_FILES = (".zarray", ".zgroup", "zarr.json")


class ImageError(ValueError):
    """An image cannot be opened or written as asked; the message says where, what and why."""


def _where(path: str | os.PathLike, dataset: str | None) -> str:
    """`path` (dataset `dataset`), the location prefix of every error message."""
    return f"{os.fspath(path)} (dataset {dataset!r})" if dataset else os.fspath(path)


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


def _storage_chunks(shape: tuple[int, ...], chunks: tuple[int, int, int] | None) -> tuple:
    """Chunk shape z y x: `chunks` (default `DEFAULT_CHUNKS`) clipped to `shape`."""
    chunks = DEFAULT_CHUNKS if chunks is None else tuple(chunks)
    return tuple(max(1, min(int(c), int(s))) for c, s in zip(chunks, shape, strict=True))


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
