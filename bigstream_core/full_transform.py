"""The registration's transform so far, from its files: ``T(x) = G(L(x))``.

``G`` is the global affine (``global/affine.txt``), ``L`` the blended local
affine field (``local/field.json``, optional). Points are µm, z y x, fixed ->
moving.
"""

from __future__ import annotations

from bigstream_core.local_affine import read_field
from bigstream_core.transforms import PointMap, affine_map, chain, read_affine


def load_transform(global_affine: str, local_field: str | None = None) -> tuple[PointMap, str]:
    """The point map of the given stage files and a one-line description of it."""
    maps = [affine_map(read_affine(global_affine))]
    names = ["global affine"]
    if local_field:
        maps.append(read_field(local_field))
        names.append("local affines")
    return chain(*maps), " + ".join(names)


def from_inputs(paths: list[str]) -> tuple[PointMap, str]:
    """``load_transform`` from a rule's input list: the affine first, then the field if any."""
    return load_transform(paths[0], paths[1] if len(paths) > 1 else None)
