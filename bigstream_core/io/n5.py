"""N5 metadata read through the containers' ``attributes.json`` (x y z there, reversed to
z y x here); the voxels go through tensorstore's ``n5`` driver (:mod:`bigstream_core.io.image`)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from bigstream_core.io.base import ImageError, _children, _missing, _read_json, _where
from bigstream_core.io.units import _is_positive, _resolution_from_attrs

N5_VERSION = "2.0.0"
"""Version written to a new N5 container's root ``attributes.json`` (zarr 2's N5Store wrote it)."""


_N5_DTYPES = {
    "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "float32", "float64"
}  # fmt: skip


def _file_kvstore(path: str | os.PathLike) -> dict:
    return {"driver": "file", "path": os.path.abspath(os.fspath(path))}


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
