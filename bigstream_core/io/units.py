"""Physical values in image metadata: numbers, units (µm, nm) and spacings, z y x µm out."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np

from bigstream_core.io.base import ImageError

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
