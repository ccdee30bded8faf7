"""Zarr (v2, v3) and OME-Zarr (NGFF 0.4 on Zarr v2, 0.5 on Zarr v3) metadata, z y x µm.

An OME-Zarr image may have leading non-spatial axes (``t``, ``c``): a singleton one is
dropped, and on a channel axis (type ``channel`` or name ``c``) one channel is chosen, by
index or by its ``omero.channels`` label. bioformats2raw's layout (a root attribute
``bioformats2raw.layout``, the image in the group ``0``) is found by itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from bigstream_core.io.base import _MAX_LISTED, _SPATIAL, ImageError, _missing, _where
from bigstream_core.io.units import _check_spacing, _number, _resolution_from_attrs, _unit_in_um


def _open_zarr(path: str, dataset: str | None, channel: int | str | None = None) -> dict:
    """Metadata of a plain zarr array or of an OME-Zarr level, z, y, x (``channel``: the
    channel of a multichannel OME-Zarr image, an index or an omero label)."""
    dataset = _bioformats2raw_dataset(path, dataset)
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
        return _open_ome_level(path, dataset, multiscale, finest, node[finest], node.attrs, channel)
    parent, _, level = (dataset or "").rpartition("/")
    group = _group_or_none(path, parent) if dataset else None
    multiscale = _multiscale(group.attrs) if group is not None else None
    if multiscale is not None and level in _level_paths(multiscale):
        return _open_ome_level(path, parent or None, multiscale, level, node, group.attrs, channel)
    if channel is not None:
        raise ImageError(
            f"{where}: `channel` {channel!r} given, but a plain zarr array has no channel axis; "
            "expected an OME-Zarr image with a `c` axis, or no `channel`"
        )
    return _plain_zarr(path, dataset, node)


def _bioformats2raw_dataset(path: str, dataset: str | None) -> str | None:
    """``dataset`` inside image ``0`` of a bioformats2raw store (a root attribute
    ``bioformats2raw.layout``, NGFF 0.4 or 0.5), unless it already names an image there."""
    root = _group_or_none(path, "")
    attrs = dict(root.attrs) if root is not None else {}
    if "bioformats2raw.layout" not in {**attrs, **attrs.get("ome", {})}:
        return dataset
    first = (dataset or "").split("/")[0]
    image = _group_or_none(path, first) if first else None
    if image is not None and _multiscale(image.attrs) is not None:
        return dataset
    return _join("0", dataset)


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
    path: str, group_path: str | None, multiscale: dict, level: str, array: zarr.Array,
    attrs: Any, channel: int | str | None,
) -> dict:  # fmt: skip
    """Metadata of `array`, level `level` of `multiscale` in the group at `group_path`
    (whose attributes are `attrs`), with `channel` chosen on a channel axis.

    Physical position = (multiscale scale * (level scale * index + level translation)
    + multiscale translation), converted from the axes' unit to µm.
    """
    dataset = _join(group_path, level)
    where = _where(path, dataset)
    levels = _level_paths(multiscale)
    lead, factors, names = _ome_axes(multiscale, array.shape, where)
    index = _lead_index(names, array.shape, _channel_labels(attrs), channel, where)
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
        "lead": index,
    }


def _channel_labels(attrs: Any) -> list[str]:
    """The ``omero.channels`` labels of an image group (NGFF 0.4 or 0.5), [] without."""
    attrs = dict(attrs)
    omero = attrs.get("ome", {}).get("omero", attrs.get("omero")) or {}
    return [str(entry.get("label", "")) for entry in omero.get("channels") or []]


def _lead_index(names: list[str], shape: tuple, labels: list[str], channel, where: str) -> tuple:
    """The index taken on each leading non-spatial axis: 0 on a singleton axis, `channel` (an
    index or an omero label) on the channel axis; ImageError naming the axes and choices."""
    lead = len(names) - 3
    found = f"axes {names} with shape {tuple(shape)}"
    if channel is not None and "c" not in names[:lead]:
        raise ImageError(f"{where}: `channel` {channel!r} given, but {found} have no channel "
                         "axis; expected no `channel` for this image")  # fmt: skip
    index = []
    for name, size in zip(names[:lead], shape[:lead], strict=True):
        if name != "c":
            index.append(0)
            continue
        choices = f"an index 0-{size - 1}" + (f" or a label of {labels}" if labels else "")
        if channel is None and size > 1:
            raise ImageError(f"{where}: {found} hold {size} channels; set `channel` to "
                             f"{choices}")  # fmt: skip
        if channel is None:
            index.append(0)
        elif isinstance(channel, str) and channel in labels:
            index.append(labels.index(channel))
        elif isinstance(channel, int) and not isinstance(channel, bool) and 0 <= channel < size:
            index.append(channel)
        else:
            raise ImageError(f"{where}: `channel` {channel!r} is not one of the {size} channels "
                             f"of {found}; expected {choices}")  # fmt: skip
    return tuple(index)


def _join(group: str | None, name: str | None) -> str | None:
    return "/".join(p for p in (group, name) if p) or None


def _ome_axes(multiscale: dict, shape: tuple, where: str) -> tuple[int, tuple, list[str]]:
    """Index of the first spatial axis, the z y x unit-to-µm factors and the axes' names
    (a channel axis named ``c``, whatever its name); checks axes vs shape.

    Requires the last three axes to be z, y, x (space), and every leading axis to be a
    channel axis or of length 1 (time).
    """
    axes = multiscale.get("axes") or [{"name": n, "type": "space"} for n in _SPATIAL]
    axes = [a if isinstance(a, dict) else {"name": a} for a in axes]
    names = [str(a.get("name", "")).lower() for a in axes]
    names = [
        "c" if a.get("type") == "channel" else name for a, name in zip(axes, names, strict=True)
    ]
    expected = "axes ending in z, y, x (space), after a channel axis and singleton time axes"
    if len(axes) != len(shape) or len(axes) < 3:
        raise ImageError(
            f"{where}: axes {names} for an array of shape {shape}; expected {expected}"
        )
    lead = len(axes) - 3
    spatial_ok = names[lead:] == list(_SPATIAL) and all(
        a.get("type", "space") == "space" for a in axes[lead:]
    )
    lead_ok = (
        all(a.get("type") != "space" for a in axes[:lead])
        and all(n == 1 or name == "c" for n, name in zip(shape[:lead], names[:lead], strict=True))
        and names[:lead].count("c") <= 1
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
    return lead, factors, names


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
