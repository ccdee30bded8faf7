"""Per-job memory at one block geometry, whatever the image's size: one deform block and one
resample block of fixed shapes, at the middle of a benchmark pair, computed as their jobs do.

    python benchmarks/same_block.py WORK/SIZE {deform,resample}

``WORK/SIZE`` is a pair whose workflow has run (``run.py``). The workflow's own largest job
is not the same block at every size: at S no block has its whole halo inside the image (and
its moving window is cut by the moving image's edge), so the largest job grows with the image
until interior blocks exist. Here the block is the same at every size:

- ``deform``: ``register_tile`` on a ``DEFORM_HALO`` block centred in the fixed image, on top
  of the run's global and local affines (the ``deform_block`` job's work);
- ``resample``: ``resample_region`` of a ``RESAMPLE_BLOCK`` region through the run's whole
  transform (global, local, the stitched field), with the run's ``transform_step`` (the
  ``resample_block`` job's work but the write). The region starts at a multiple of its
  own z size and stays within one 128-voxel z chunk of the field store, as the workflow's
  chunk-aligned blocks do (a field read covers whole z chunks).

Writes ``same_block_<stage>.json`` next to the pair: the block, the moving window it reads
(from every 8th voxel's position) and its masked share.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bigstream_core.deform import DeformParams, register_tile
from bigstream_core.resample import resample_region, source_window, transformed_voxels
from bigstream_core.tiling import Tile
from bigstream_workflow.config import load_yaml, merge_config, open_config_images
from bigstream_workflow.transform_files import from_inputs

ROOT = Path(__file__).resolve().parent.parent
DEFORM_HALO = (96, 160, 224)
RESAMPLE_BLOCK = (64, 128, 256)


def centred(shape, size) -> tuple[tuple[int, int], ...]:
    """``size`` voxels around the middle of ``shape`` (z starting at a multiple of its size),
    cut to the image where it is smaller (``--quick``'s pair)."""
    size = [min(s, n) for s, n in zip(size, shape, strict=True)]
    z = min(shape[0] // 2 // size[0] * size[0], shape[0] - size[0])
    rest = (
        (n // 2 - s // 2, n // 2 - s // 2 + s) for n, s in zip(shape[1:], size[1:], strict=True)
    )
    return ((z, z + size[0]), *rest)


def main(pair: Path, stage: str) -> dict:
    results = pair / "workflow" / "results"
    config = merge_config(load_yaml(ROOT / "config" / "config.yaml"),
                          load_yaml(pair / "workflow" / "config.yaml"))  # fmt: skip
    images = open_config_images(config)
    fixed, moving = images["fixed"]["highres"], images["moving"]["highres"]
    affines = [str(results / "global" / "affine.txt"), str(results / "local" / "field.json")]
    if stage == "deform":
        box = centred(fixed.shape, DEFORM_HALO)
        transform, _ = from_inputs(affines)
        tile = Tile((0, 0, 0), box, box)
        _, report = register_tile(fixed, moving, transform, tile,
                                  DeformParams.from_config(config["deform"]))  # fmt: skip
        masked = report["masked_share"]
    else:
        box = centred(fixed.shape, RESAMPLE_BLOCK)
        transform, _ = from_inputs([*affines, str(results / "transform" / "field.json")])
        region = tuple(slice(*bounds) for bounds in box)
        step = config["resample"]["transform_step"]
        _, inside = resample_region(moving, transform, region, fixed.spacing, fixed.origin,
                                   config["resample"]["order"], True, step)  # fmt: skip
        masked = 1.0 - float(inside.mean())
    corners = tuple(slice(a, b, 8) for a, b in box)  # the window read, near enough
    window = source_window(moving, transformed_voxels(moving, transform, corners, fixed.spacing,
                                                      fixed.origin), 0)  # fmt: skip
    result = {"block": "x".join(str(b - a) for a, b in box),
              "window": "x".join(str(s.stop - s.start) for s in window) if window else "none",
              "masked_share": round(masked, 3)}  # fmt: skip
    (pair / f"same_block_{stage}.json").write_text(json.dumps(result))
    return result


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
