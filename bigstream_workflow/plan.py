"""The plan: which tiles each stage runs, computed from image metadata only.

The same functions run when the Snakefile is parsed (to build the DAG) and in
the ``plan`` rule (to record the grids under ``<output_dir>/plan``), so the
recorded plan is exactly what the jobs use.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from bigstream_core import atomic
from bigstream_core.io import Image, pyramid_shapes
from bigstream_core.io.pyramid import level_factors
from bigstream_core.keypoints import keypoint_grid
from bigstream_core.tiling import (
    Tile,
    batch_shape,
    grid_table,
    overlap_voxels,
    tile_grid,
)
from bigstream_workflow.provenance import describe_images, provenance


def stage_grids(
    config: dict[str, Any], images: dict[str, dict[str, Image]]
) -> dict[str, list[Tile]]:
    """Tile grids of every enabled stage, keyed by grid name.

    - ``keypoints_fixed`` / ``keypoints_moving``: low-res key-point tiles of each
      image (:func:`bigstream_core.keypoints.keypoint_grid`);
    - ``local_affine``: low-res fixed tiles with ``local_affine.overlap``;
    - ``deform``: high-res fixed blocks with ``deform.overlap``, halos starting at a
      multiple of the finest level's shrink (every block's field on one lattice of nodes);
    - ``resample``: high-res fixed output blocks, no overlap;
    - ``pyramid_<k>``: blocks of level k >= 1 of the output's pyramid (``resample.blocksize``
      voxels of that level), each made from level k - 1 (:func:`pyramid_sources`).
    """
    ga = config["global_affine"]
    grids = {
        f"keypoints_{role}": keypoint_grid(
            images[role]["lowres"].shape, ga["blocksize"], ga["min_radius"], ga["max_radius"]
        )
        for role in ("fixed", "moving")
    }
    if config["local_affine"]["enabled"]:
        grids["local_affine"] = overlapping_grid(config["local_affine"], images["fixed"]["lowres"])
    if config["deform"]["enabled"]:
        deform = config["deform"]
        grids["deform"] = overlapping_grid(
            deform, images["fixed"]["highres"], deform["shrink_factors"][-1]
        )
    blocksize = config["resample"]["blocksize"]
    levels = pyramid_shapes(images["fixed"]["highres"].shape)
    grids["resample"] = tile_grid(levels[0], blocksize)
    for level, shape in enumerate(levels[1:], start=1):
        grids[pyramid_grid(level)] = tile_grid(shape, blocksize)
    return grids


AUTO_JOBS = 5000
"""``blocks_per_job: auto`` batches a stage's blocks into at most this many jobs per rule
(deform_block, stitch_field, invert_field; resample_block, and fewer for each level of
the output's pyramid): Snakemake plans that many quickly (the curve:
``benchmarks/results/2026-12-03-planning.md``)."""


def blocks_per_job(setting: str | list[int], counts: tuple[int, int, int]) -> tuple[int, int, int]:
    """A stage's blocks per job (z, y, x): the config's list as it is, or for ``"auto"``
    the smallest near-cubic batches that cut the stage's grid of ``counts`` blocks (z, y, x)
    into at most :data:`AUTO_JOBS` jobs (:func:`bigstream_core.tiling.batch_shape`; one
    block per job on a grid of up to that many blocks)."""
    if setting == "auto":
        return batch_shape(counts, AUTO_JOBS)
    return tuple(setting)


def pyramid_grid(level: int) -> str:
    """The grid name of the output pyramid's level ``level`` (0: the resample blocks)."""
    return f"pyramid_{level}" if level else "resample"


def pyramid_sources(tile: Tile, below: tuple[int, int, int], blocksize) -> list[tuple]:
    """Grid indices (z, y, x) of the blocks of the level below (of z, y, x shape ``below``,
    cut into ``blocksize`` blocks) that a pyramid block ``tile`` reads: its core times the
    downsampling factors."""
    ranges = []
    for (start, stop), n, size, factor in zip(
        tile.core, below, blocksize, level_factors(below), strict=True
    ):
        first, last = start * factor, min(stop * factor, n)
        ranges.append(range(first // size, -(-last // size)))
    return list(itertools.product(*ranges))


def overlapping_grid(block: dict[str, Any], image: Image, align: int = 1) -> list[Tile]:
    """Tiles of ``block["blocksize"]`` voxels with ``block["overlap"]`` (fraction) on
    ``image``, halos starting at a multiple of ``align`` (:func:`tiling.tile_grid`)."""
    overlap = overlap_voxels(block["blocksize"], block["overlap"])
    return tile_grid(image.shape, block["blocksize"], overlap, align)


def write_plan(
    out_dir: str | Path,
    config: dict[str, Any],
    images: dict[str, dict[str, Image]],
    grids: dict[str, list[Tile]],
    nonfinite: dict[str, int] | None = None,
) -> None:
    """Record the plan: ``images.json`` (metadata, provenance, and per image the NaN or
    infinite voxels of its low-res level, ``nonfinite``) and one TSV per grid.

    The grid tables are written first and ``images.json`` last, each atomically,
    so a complete ``images.json`` means a complete plan.
    """
    out_dir = Path(out_dir)
    for name, tiles in grids.items():
        atomic.write_table(out_dir / f"grid_{name}.tsv", grid_table(tiles))
    summary = {
        "images": describe_images(images),
        "grids": {name: len(tiles) for name, tiles in grids.items()},
        "nonfinite_lowres_voxels": nonfinite or {},
        "provenance": provenance(config),
    }
    atomic.write_json(out_dir / "images.json", summary)
