"""Carrying tables of points (e.g. detected spots) between the two images' spaces.

A table is CSV, TSV or Parquet with columns ``z``, ``y``, ``x`` in µm (the
physical positions of the images' voxel grids); every other column is kept.
Points in fixed space go to moving space through ``T(x) = G(L(x + d(x)))``;
points in moving space come back through its inverse.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bigstream_core import atomic
from bigstream_core.transforms import PointMap

AXES = ["z", "y", "x"]


def read_points(path: str | Path) -> pd.DataFrame:
    """A points table; raises ``ValueError`` naming the file if it lacks z, y, x columns."""
    path = Path(path)
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
    else:
        table = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    missing = [axis for axis in AXES if axis not in table.columns]
    if missing:
        raise ValueError(
            f"{path}: points table has no column(s) {missing}; expected z, y, x in µm "
            f"(found {list(table.columns)})"
        )
    if not np.isfinite(table[AXES].to_numpy(dtype=float)).all():
        raise ValueError(f"{path}: z, y, x must be finite numbers (µm)")
    return table


def write_points(path: str | Path, table: pd.DataFrame) -> None:
    """Write a points table in the format its extension names, atomically."""
    path = Path(path)
    with atomic.atomic_path(path) as temporary:
        if path.suffix == ".parquet":
            table.to_parquet(temporary, index=False)
        else:
            table.to_csv(temporary, sep="\t" if path.suffix == ".tsv" else ",", index=False)


def warp_points(table: pd.DataFrame, point_map: PointMap) -> pd.DataFrame:
    """A copy of ``table`` with z, y, x mapped through ``point_map`` (µm -> µm)."""
    result = table.copy()
    result[AXES] = point_map(table[AXES].to_numpy(dtype=float))
    return result
