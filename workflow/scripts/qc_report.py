"""Rule `qc_report`: the pictures and the metrics table of `snakemake --report`."""

import json
import math

import pandas as pd
import yaml

from bigstream_core import atomic
from bigstream_core.io import open_image
from bigstream_workflow.config import open_config_images
from bigstream_workflow.logs import configure
from bigstream_workflow.provenance import provenance
from bigstream_workflow.qc_planes import DisplayGrid, sample_planes
from bigstream_workflow.qc_views import (
    mid_plane_ncc,
    save_checkerboard,
    save_overlay,
    save_tile_maps,
    tile_values,
)

log = configure(snakemake)
images = open_config_images(snakemake.params.images)
fixed = images["fixed"]["highres"]
grid = DisplayGrid.around(fixed)
fixed_planes = sample_planes(fixed, grid)
views = {"before": images["moving"]["highres"]}  # the moving image where it lies, no transform
views |= {
    stage: open_image(path, "0", channel=channel)
    for stage, (path, channel) in snakemake.params.stage_images.items()
}

rows = []
for (stage, image), path in zip(views.items(), snakemake.output.overlays, strict=True):
    planes = sample_planes(image, grid)
    ncc = mid_plane_ncc(fixed_planes, planes)
    with atomic.atomic_path(path) as part:
        save_overlay(part, grid, fixed_planes, planes,
                     f"{stage}: fixed (magenta) over moving (green); NCC {ncc:.3f}")  # fmt: skip
    rows.append({"stage": stage, "ncc_fg_mid_planes": ncc})
    log.info("%s: mid-plane NCC over the fixed foreground %.4f", stage, ncc)
final_planes = planes  # the last view: the aligned image
with atomic.atomic_path(snakemake.output.checkerboard) as part:
    save_checkerboard(part, grid, fixed_planes, final_planes,
                      f"{stage}: fixed / aligned moving checkerboard")  # fmt: skip

metrics = pd.DataFrame(rows).set_index("stage")
global_report = json.loads(open(snakemake.input.global_report).read())
for key in ("inliers", "residual_median_um", "residual_p90_um"):
    metrics.loc["global affine", key] = global_report.get(key)
maps = {}
if snakemake.input.local_report:
    local = pd.read_csv(snakemake.input.local_report, sep="\t")
    metrics.loc["local affines", "tiles"] = len(local)
    metrics.loc["local affines", "failed_share"] = (local["status"] != "ok").mean()
    metrics.loc["local affines", "filled_share"] = local["filled"].notna().mean()
    kept_global = local["decision"].fillna("").str.startswith("global")  # fitted or filled
    metrics.loc["local affines", "kept_global_share"] = kept_global.mean()
    maps["local inliers"] = tile_values(local, "inliers")
    maps["local residual (µm)"] = tile_values(local, "residual_median_um")
if snakemake.input.deform_report:
    deform = pd.read_csv(snakemake.input.deform_report, sep="\t")
    deform["ncc_gain"] = deform["ncc_after"] - deform["ncc_before"]
    metrics.loc[stage, "blocks"] = len(deform)
    metrics.loc[stage, "failed_share"] = (deform["status"] != "ok").mean()
    metrics.loc[stage, "ncc_gain_mean"] = deform["ncc_gain"].mean()
    maps["deform NCC gain"] = tile_values(deform, "ncc_gain")
    deform["nonfinite"] = deform["nonfinite_fixed"] + deform["nonfinite_moving"]
    metrics.loc[stage, "nonfinite_blocks"] = int((deform["nonfinite"] > 0).sum())
    if metrics.loc[stage, "nonfinite_blocks"]:  # which blocks read NaN or infinite voxels
        maps["deform NaN/inf voxels read"] = tile_values(deform, "nonfinite")
    field = json.loads(open(snakemake.input.field).read())
    metrics.loc[stage, "jacobian_min"] = field["jacobian_min"]
    metrics.loc[stage, "folded_share"] = field["folded_voxels"] / math.prod(field["shape"][:3])
if snakemake.input.inverse_field:  # how far the inverse brings each voxel back
    inverse = json.loads(open(snakemake.input.inverse_field).read())
    for key in ("round_trip_mean_um", "round_trip_max_um"):
        metrics.loc[stage, f"inverse_{key}"] = inverse[key]
if snakemake.input.accuracy:  # a known transform: TRE before and after each stage
    tre = [row["mean_um"] for row in json.loads(open(snakemake.input.accuracy).read())["stages"]]
    metrics["tre_mean_um"] = tre[: len(metrics) - 1] + tre[-1:]  # the last view: all stages
for path in snakemake.output.tiles:
    with atomic.atomic_path(path) as part:
        save_tile_maps(part, maps, "per tile: local affine inliers and residuals, deform gain")
atomic.write_table(snakemake.output.metrics, metrics.reset_index())
record = provenance(snakemake.config, images)
atomic.write_text(snakemake.output.provenance, yaml.safe_dump(record, sort_keys=False))
log.info("metrics:\n%s", metrics.to_string())
