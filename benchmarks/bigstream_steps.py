"""One step of the published bigstream (5.0.x) on a phantom pair, for the side-by-side benchmark.

Runs inside the separate virtual environment that ``benchmarks/bigstream_side.py`` creates
(bigstream, zarr < 3, opencv); it imports nothing of this project. ``run.py`` times each
step in its own process (wall, CPU, peak memory), as it times ours.

    python bigstream_steps.py STEP WORK

``WORK/bigstream/job.json`` (written by ``bigstream_side.py``) gives the pair (N5 paths,
spacing and origin of the ``lowres`` and ``highres`` levels, z y x µm), the parameters of
each step and the fixed points (``points.npy``, µm z y x) on which the accuracy is measured.
Each step writes its transform and ``mapped_<step>.npy``: those points carried into the moving
image by every transform found so far, composed as bigstream composes them when it resamples
(``bigstream.transform.apply_transform_to_coordinates``). Steps, in order:

- ``ransac``: ``alignment_pipeline`` with a ``ransac`` step on the low-res level (the global
  affine, origins given) -> ``affine.npy`` (4x4, fixed -> moving µm).
- ``local``: ``distributed_piecewise_alignment_pipeline`` with a ``ransac`` step per block on the
  low-res level, the global affine as static transform, a local dask cluster -> ``local.npy``
  (displacement field on the low-res fixed grid, µm).
- ``deform``: the same pipeline with a ``deform`` step per block on the high-res level, both
  earlier transforms static -> ``deform.npy`` (displacement field on the high-res grid).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import zarr
from bigstream.align import alignment_pipeline
from bigstream.piecewise_align import distributed_piecewise_alignment_pipeline
from bigstream.transform import apply_transform_to_coordinates


def level(path: str, name: str) -> np.ndarray:
    """A whole N5 level as numpy (bigstream's steps take in-memory arrays or zarr 2 arrays)."""
    return zarr.open(zarr.N5Store(path), mode="r")[name][...]


def cluster_kwargs(job: dict) -> dict:
    """A ``ClusterWrap`` local dask cluster: ``workers`` single-threaded processes."""
    return {"cluster_type": "local_cluster", "n_workers": job["workers"], "threads_per_worker": 1}


def main(step: str, work: Path) -> None:
    folder = work / "bigstream"
    job = json.loads((folder / "job.json").read_text())
    low, high = job["lowres"], job["highres"]
    points = np.load(folder / "points.npy")
    spacing_low = np.array(low["spacing"])
    if step == "ransac":
        fix, mov = level(job["fixed"], "lowres"), level(job["moving"], "lowres")
        origin = np.array(low["origin"])
        affine = alignment_pipeline(fix, mov, spacing_low, spacing_low,
                                    steps=[("ransac", job["ransac"])],
                                    fix_origin=origin, mov_origin=origin)  # fmt: skip
        np.save(folder / "affine.npy", affine)
        transforms, spacings = [affine], (None,)
    elif step == "local":
        fix, mov = level(job["fixed"], "lowres"), level(job["moving"], "lowres")
        affine = np.load(folder / "affine.npy")
        field = distributed_piecewise_alignment_pipeline(
            fix, mov, spacing_low, spacing_low, steps=[("ransac", job["ransac_local"])],
            blocksize=job["local_blocksize"], overlap=job["local_overlap"],
            static_transform_list=[affine], cluster_kwargs=cluster_kwargs(job),
            temporary_directory=str(folder),
        )  # fmt: skip
        np.save(folder / "local.npy", np.asarray(field, dtype=np.float32))
        transforms, spacings = [affine, field], (spacing_low, None)
    elif step == "deform":
        fix, mov = level(job["fixed"], "highres"), level(job["moving"], "highres")
        spacing_high = np.array(high["spacing"])
        affine, local = np.load(folder / "affine.npy"), np.load(folder / "local.npy")
        field = distributed_piecewise_alignment_pipeline(
            fix, mov, spacing_high, spacing_high, steps=[("deform", job["deform"])],
            blocksize=job["deform_blocksize"], overlap=job["deform_overlap"],
            static_transform_list=[affine, local], cluster_kwargs=cluster_kwargs(job),
            temporary_directory=str(folder),
        )  # fmt: skip
        np.save(folder / "deform.npy", np.asarray(field, dtype=np.float32))
        transforms, spacings = [affine, local, field], (spacing_high, spacing_low, None)
    else:
        raise SystemExit(f"unknown step {step!r}: expected ransac, local or deform")
    # bigstream applies the list from its end and indexes a tuple of spacings in that order
    mapped = apply_transform_to_coordinates(points.copy(), transforms, transform_spacing=spacings)
    np.save(folder / f"mapped_{step}.npy", mapped)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
