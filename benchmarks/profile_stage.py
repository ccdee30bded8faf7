"""Where the time goes: one deform block (the slowest stage) under cProfile, and this machine's
floors for the same block: one read of its voxels, one Gaussian pass and one
``map_coordinates`` pass over it.

    python benchmarks/profile_stage.py WORK/SIZE [DEFORM_OVERRIDES_JSON]

``WORK/SIZE`` is a benchmark pair whose workflow has run (``run.py``): the block is the deform
grid's middle one, registered exactly as its job does (``register_tile`` with the run's
config and its affine stages' transforms). Prints the top functions by own time and writes
``profile.json`` (floors and the top functions) next to the pair.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from bigstream_core.deform import DeformParams, register_tile
from bigstream_workflow.config import load_yaml, merge_config, open_config_images
from bigstream_workflow.plan import stage_grids
from bigstream_workflow.transform_files import from_inputs

ROOT = Path(__file__).resolve().parent.parent
TOP = 12


def seconds(function, *args, **kwargs) -> float:
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


def floors(fixed, tile) -> dict:
    """One read of the block's halo, one Gaussian (sigma 1 voxel) and one trilinear
    ``map_coordinates`` pass over it (float32), seconds."""
    halo = tuple(slice(*bounds) for bounds in tile.halo)
    start = time.perf_counter()
    block = np.asarray(fixed.read(halo), dtype=np.float32)
    read = time.perf_counter() - start
    coordinates = np.indices(block.shape, dtype=np.float32) + np.float32(0.3)
    return {
        "halo_voxels": int(block.size),
        "read_s": round(read, 3),
        "gaussian_pass_s": round(seconds(ndimage.gaussian_filter, block, 1.0), 3),
        "map_coordinates_pass_s": round(
            seconds(ndimage.map_coordinates, block, coordinates, order=1, output=np.float32), 3
        ),
    }


def main(pair: Path, overrides: dict) -> dict:
    results = pair / "workflow" / "results"
    user = load_yaml(pair / "workflow" / "config.yaml")
    config = merge_config(load_yaml(ROOT / "config" / "config.yaml"), user)
    config["deform"].update(overrides)
    images = open_config_images(config)
    tiles = stage_grids(config, images)["deform"]
    tile = tiles[len(tiles) // 2]
    transform, _ = from_inputs([str(results / "global" / "affine.txt"),
                                str(results / "local" / "field.json")])  # fmt: skip
    params = DeformParams.from_config(config["deform"])
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    register_tile(images["fixed"]["highres"], images["moving"]["highres"], transform, tile, params)
    profile.disable()
    block_s = time.perf_counter() - start
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(TOP)
    rows = sorted(stats.stats.items(), key=lambda item: -item[1][2])[:TOP]
    top = [{"function": f"{Path(file).name}:{line}({name})", "calls": calls,
            "own_s": round(own, 2), "cumulative_s": round(cumulative, 2)}
           for (file, line, name), (_, calls, own, cumulative, _) in rows]  # fmt: skip
    report = {"block": tile.id, "block_s": round(block_s, 2),
              **floors(images["fixed"]["highres"], tile), "top": top}  # fmt: skip
    (pair / "profile.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
