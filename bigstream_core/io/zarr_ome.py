"""Zarr (v2, v3) and OME-Zarr (NGFF 0.4 on Zarr v2, 0.5 on Zarr v3) metadata, z y x µm."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from bigstream_core.io.base import _MAX_LISTED, _SPATIAL, ImageError, _missing, _where
from bigstream_core.io.units import _check_spacing, _number, _resolution_from_attrs, _unit_in_um


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
