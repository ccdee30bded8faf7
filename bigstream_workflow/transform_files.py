"""The registration's transform so far, from its files: ``T(x) = G(L(x + d(x)))``.

``G`` is the global affine (``global/affine.txt``), ``L`` the blended local
affine field (``local/field.json``, optional), ``d`` the stitched displacement
field (``transform/field.json``, the completion record of
``transform/field.zarr``, optional). Points are µm, z y x, fixed -> moving;
:func:`load_inverse` gives the way back, moving -> fixed.
"""

from __future__ import annotations

import json

import numpy as np

from bigstream_core.affine_field import invert_local_field, read_field
from bigstream_core.displacement import open_field
from bigstream_core.transforms import PointMap, affine_map, chain, read_affine

STAGE_NAMES = {"global": "global affine", "local": "local affines", "deform": "deformation"}


def stage_files(paths: list[str]) -> dict[str, str]:
    """A rule's transform inputs by stage: the ``.txt`` affine is ``global``; a JSON
    naming a ``store`` is a displacement field (``deform``); another JSON is ``local``.
    An inverse field's record (``"inverse": true``) is ``inverse``."""
    files = {}
    for path in paths:
        if path.endswith(".txt"):
            files["global"] = path
            continue
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if "store" not in data:
            files["local"] = path
        else:
            files["inverse" if data.get("inverse") else "deform"] = path
    return files


def _store(record: str) -> str:
    with open(record, encoding="utf-8") as handle:
        return json.load(handle)["store"]


def load_transform(files: dict[str, str]) -> tuple[PointMap, str]:
    """The fixed -> moving point map of the given stages and a one-line description."""
    maps, names = [], []
    for stage in ("global", "local", "deform"):
        if stage not in files:
            continue
        path = files[stage]
        if stage == "global":
            maps.append(affine_map(read_affine(path)))
        elif stage == "local":
            maps.append(read_field(path))
        else:
            maps.append(open_field(_store(path)))
        names.append(STAGE_NAMES[stage])
    return chain(*maps), " + ".join(names)


def load_inverse(files: dict[str, str]) -> PointMap:
    """The moving -> fixed point map: ``x = psi(L^-1(G^-1(y)))`` with ``psi(u) = u + e(u)``
    from the inverse field (needed when the deform stage ran)."""
    maps = [affine_map(np.linalg.inv(read_affine(files["global"])))]
    if "local" in files:
        field = read_field(files["local"])
        maps.insert(0, lambda points: invert_local_field(field, points))
    if "deform" in files:
        if "inverse" not in files:
            raise ValueError("the deformation's inverse field is needed to map moving -> fixed")
        maps.insert(0, open_field(_store(files["inverse"])))
    return chain(*maps)


def from_inputs(paths: list[str]) -> tuple[PointMap, str]:
    """``load_transform`` from a rule's list of transform files."""
    return load_transform(stage_files(paths))
