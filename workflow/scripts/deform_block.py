"""Rule `deform_block`: deformable registration of a batch of overlapping high-res blocks,
one after the other, into the batch's folder (<tile>.npy field, <tile>.json report)."""

import json

import numpy as np

from bigstream_core import atomic
from bigstream_core.deform import DeformParams, register_tile
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure
from bigstream_workflow.transform_files import from_inputs

log = configure(snakemake)
images = open_config_images(snakemake.params.images)
transform, description = from_inputs(list(snakemake.input.transforms))
params = DeformParams.from_config(snakemake.params.deform)
tiles = snakemake.params.tiles
with atomic.atomic_directory(snakemake.output[0]) as folder:
    for number, tile in enumerate(tiles, start=1):
        field, report = register_tile(
            images["fixed"]["highres"], images["moving"]["highres"], transform, tile, params
        )
        np.save(folder / f"{tile.id}.npy", field)
        report["halo"] = [list(bounds) for bounds in tile.halo]
        (folder / f"{tile.id}.json").write_text(json.dumps(report, indent=2) + "\n")
        log.info("block %d/%d %s on top of %s: %s", number, len(tiles), tile.id, description,
                 report)  # fmt: skip
