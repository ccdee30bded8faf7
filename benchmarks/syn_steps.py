"""One ANTs SyN registration (antspyx) of a phantom pair's low-res level, for the deform benchmark.

Runs inside the separate virtual environment that ``benchmarks/syn_side.py`` creates (antspyx,
never a dependency of this project); it imports nothing of this project.

    python syn_steps.py WORK NAME

``WORK/syn/job.json`` (written by ``syn_side.py``) gives the fixed and moving low-res levels
(``.npy``, z y x), their spacing and origin (µm, z y x), the start (``affine``: a 4x4 text
file, fixed -> moving µm, z y x; our global affine) and, per run ``NAME``, the keyword
arguments of ``ants.registration``. The arrays go to ANTs with their axes as they are, so
ITK's physical axes 0 1 2 are our z y x. Writes ``WORK/syn/NAME_field.npy``: (Z, Y, X, 3)
float32 on the fixed grid, the displacement ``u`` (µm, z y x) with ``x -> x + u(x)`` the
whole fixed -> moving map that SyN found (its start included), and ``NAME_report.json``:
the registration's seconds, ANTs' transform files, and a self-check: the correlation
between ANTs' own resampling of the moving image and the moving image sampled at
``x + u(x)`` (near 1 when the field means what this docstring says).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import ants
import numpy as np
from scipy import ndimage


def image(array: np.ndarray, spacing, origin):
    return ants.from_numpy(
        np.asarray(array, dtype=np.float32),
        origin=tuple(map(float, origin)),
        spacing=tuple(map(float, spacing)),
    )


def initial_transform(affine: np.ndarray, path: Path) -> str:
    """``affine`` (fixed -> moving µm) as an ITK affine transform file (centre 0)."""
    transform = ants.create_ants_transform(
        transform_type="AffineTransform", dimension=3,
        parameters=[*affine[:3, :3].ravel(), *affine[:3, 3]], fixed_parameters=[0.0, 0.0, 0.0],
    )  # fmt: skip
    ants.write_transform(transform, str(path))
    return str(path)


def self_check(fixed, moving, transforms: list[str], field: np.ndarray, job: dict) -> float:
    """Correlation of ANTs' resampled moving image with ``moving(x + u(x))`` (scipy)."""
    warped = ants.apply_transforms(fixed, moving, transforms, interpolator="linear").numpy()
    spacing, origin = np.asarray(job["fixed_spacing"]), np.asarray(job["fixed_origin"])
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in field.shape[:3]), indexing="ij"), -1)
    points = origin + grid * spacing + field
    voxels = (points - np.asarray(job["moving_origin"])) / np.asarray(job["moving_spacing"])
    ours = ndimage.map_coordinates(moving.numpy(), np.moveaxis(voxels, -1, 0), order=1,
                                   mode="nearest")  # fmt: skip
    inside = np.all((voxels >= 0) & (voxels <= np.asarray(moving.shape) - 1), axis=-1)
    return float(np.corrcoef(warped[inside], ours[inside])[0, 1])


def main(work: Path, name: str) -> None:
    folder = work / "syn"
    job = json.loads((folder / "job.json").read_text())
    fixed = image(np.load(job["fixed"]), job["fixed_spacing"], job["fixed_origin"])
    moving = image(np.load(job["moving"]), job["moving_spacing"], job["moving_origin"])
    start = initial_transform(np.loadtxt(job["affine"]), folder / "initial.mat")
    began = time.perf_counter()
    registration = ants.registration(fixed, moving, initial_transform=start, **job["runs"][name])
    seconds = time.perf_counter() - began
    transforms = list(registration["fwdtransforms"])
    composite = ants.apply_transforms(fixed, moving, transforms, compose=str(folder / f"{name}_"))
    field = np.ascontiguousarray(ants.image_read(composite).numpy(), dtype=np.float32)
    np.save(folder / f"{name}_field.npy", field)
    check = self_check(fixed, moving, transforms, field, job)
    report = {"seconds": seconds, "transforms": transforms, "self_check_correlation": check}
    (folder / f"{name}_report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
