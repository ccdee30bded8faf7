"""Rule `settle_local_affines`: fill failed and outlier tiles (each fill proving itself as a
fitted tile does, one tile in memory at a time), write the grid and the field."""

import json

import numpy as np
import pandas as pd

from bigstream_core import atomic
from bigstream_core.affine_field import field_from_grid, write_field
from bigstream_core.local_affine import REPORT_COLUMNS, prove_filled, settle_tiles
from bigstream_core.masks import load_mask
from bigstream_core.tiling import overlap_voxels
from bigstream_core.transforms import read_affine
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure
from bigstream_workflow.plan import overlapping_grid

log = configure(snakemake)
local = snakemake.params.local
images = open_config_images(snakemake.params.images)
lowres, moving = images["fixed"]["lowres"], images["moving"]["lowres"]
tiles = overlapping_grid(local, lowres)
global_affine = read_affine(snakemake.input.affine)
masks = (load_mask(snakemake.input.fixed_mask), load_mask(snakemake.input.moving_mask))


def prove(tile, matrix):
    proved = prove_filled(
        lowres, moving, global_affine, tile, matrix, local["refine"], masks, snakemake.params.seed
    )
    log.info("filled tile %s: %s", tile.id, proved[1]["decision"])
    return proved


results, rows = {}, []
for path in snakemake.input.tiles:
    with open(path, encoding="utf-8") as handle:
        tile = json.load(handle)
    results[tile["tile"]] = None if tile["affine"] is None else np.array(tile["affine"])
    rows.append({column: tile[column] for column in REPORT_COLUMNS})
affines, report = settle_tiles(
    results, pd.DataFrame(rows), tiles, lowres, local["outlier_tolerance"], prove
)
atomic.write_npy(snakemake.output.affines, affines)
atomic.write_table(snakemake.output.report, report)
overlap = overlap_voxels(local["blocksize"], local["overlap"])
field = field_from_grid(affines, local["blocksize"], overlap, lowres.spacing, lowres.origin)
write_field(snakemake.output.field, field)
filled = report[report["filled"] != ""]
log.info("%d tiles, %d filled:\n%s", len(report), len(filled), filled.to_string(index=False))
