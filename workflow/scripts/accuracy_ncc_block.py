"""Rule `accuracy_ncc_block`: a batch of low-res NCC blocks, one after the other: for every
stage's transform (and before registration), the partial sums of the foreground NCC."""

import json

from bigstream_core import atomic
from bigstream_core.accuracy import NCC_SUMS, batch_ncc_sums, with_identity
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure
from bigstream_workflow.transform_files import from_inputs

log = configure(snakemake)
images = open_config_images(snakemake.params.images)
with open(snakemake.input.level, encoding="utf-8") as handle:
    level = json.load(handle)["level"]
files = list(snakemake.input.transforms)
stages = with_identity([from_inputs(files[:count])[::-1] for count in range(1, len(files) + 1)])
tiles = snakemake.params.tiles
regions = [tile.slices("core") for tile in tiles]
sums = batch_ncc_sums(images["fixed"]["lowres"], images["moving"]["lowres"], stages, regions, level)
record = {"level": level, "columns": list(NCC_SUMS), "blocks": [tile.id for tile in tiles],
          "sums": sums}  # fmt: skip
atomic.write_json(snakemake.output[0], record)
log.info("%d blocks, %d foreground voxels", len(tiles), int(next(iter(sums.values()))[0]))
