# Shared set-up: config checks, image metadata, tile grids, output paths.
import os
import re

import numpy as np
from snakemake.exceptions import WorkflowError

from bigstream_workflow.config import (
    ConfigError,
    checked_config,
    field_shrink,
    moving_channels,
    open_moving_channels,
)
from bigstream_core import masks
from bigstream_core.accuracy import NCC_BLOCK, ncc_batches
from bigstream_core.deform import DeformParams
from bigstream_core.io import pyramid_shapes
from bigstream_core.keypoints import first_octave
from bigstream_workflow.plan import (
    AUTO_JOBS,
    blocks_per_job,
    pyramid_grid,
    pyramid_sources,
    stage_grids,
)
from bigstream_workflow.resources import (
    accuracy_level_mem_mb as accuracy_level_job_mem_mb,
    accuracy_ncc_mem_mb as accuracy_ncc_job_mem_mb,
    deform_mem_mb as deform_job_mem_mb,
    deform_runtime_min as deform_job_runtime_min,
    field_region_mem_mb as field_region_job_mem_mb,
    keypoint_job_mem_mb,
    local_tile_mem_mb as local_job_mem_mb,
    mask_mem_mb as mask_job_mem_mb,
    match_job_mem_mb,
    refine_mem_mb as refine_job_mem_mb,
    pyramid_mem_mb as pyramid_job_mem_mb,
    resample_mem_mb as resample_job_mem_mb,
    runtime_min,
    settle_runtime_min as settle_job_runtime_min,
)
from bigstream_workflow.retries import resource_attempts
from bigstream_workflow.layout import RULES, VIEWS, benchmark_file, inverse_wanted
from bigstream_workflow.lowres_view import VIEW_BLOCK, view_batches
from bigstream_workflow.provenance import input_fingerprints, script_digest
from bigstream_workflow.summary import run_summary
from bigstream_core.tiling import (
    TILE_ID_PATTERN,
    batch_id,
    block_chunks,
    grid_counts,
    node_tile,
    tile_batches,
    tiles_around,
)

try:
    IMAGES = checked_config(config, workflow.source_path("../schemas/config.schema.yaml"))
except ConfigError as error:
    where = f" (set {config['set']['name']})" if config.get("set") else ""
    raise WorkflowError(f"bigstream-workflow{where}: {error}") from None

GRIDS = stage_grids(config, IMAGES)
TILES = {name: {tile.id: tile for tile in tiles} for name, tiles in GRIDS.items()}
# the tiled high-res stages run `blocks_per_job` neighbouring blocks per job ("batches"),
# `auto` resolved on the stage's grid (bigstream_workflow.plan.blocks_per_job)
PER_JOB = {
    stage: blocks_per_job(config[stage]["blocks_per_job"], grid_counts(GRIDS[stage]))
    for stage in ("deform", "resample")
    if stage in GRIDS
}
BATCHES = {stage: tile_batches(GRIDS[stage], per_job) for stage, per_job in PER_JOB.items()}
# the output's pyramid: level k's blocks, batched as the resample blocks are
LEVELS = pyramid_shapes(IMAGES["fixed"]["highres"].shape)
BATCHES |= {
    pyramid_grid(level): tile_batches(GRIDS[pyramid_grid(level)], PER_JOB["resample"])
    for level in range(1, len(LEVELS))
}
BATCH_OF = {
    stage: {tile.id: batch for batch, tiles in batches.items() for tile in tiles}
    for stage, batches in BATCHES.items()
}
# the accuracy's foreground NCC (with a ground truth): the fixed low-res level's NCC blocks,
# batched to a voxel budget per job (bigstream_core.accuracy.ncc_batches); a level that
# makes one batch (up to ~67 M voxels: the demo and every test pair) is summed by
# evaluate_accuracy itself, the same figures without two more jobs
NCC_BATCHES = (
    ncc_batches(IMAGES["fixed"]["lowres"].shape, max_jobs=AUTO_JOBS)
    if config.get("ground_truth")
    else {}
)
NCC_BATCHES = NCC_BATCHES if len(NCC_BATCHES) > 1 else {}
# the low-res views' blocks, batched to a voxel budget per job likewise
# (bigstream_workflow.lowres_view.view_batches); a level of one batch is written by
# finalize_lowres_view alone
VIEW_BLOCKS = view_batches(IMAGES["fixed"]["lowres"].shape, max_jobs=AUTO_JOBS)
VIEW_BATCHES = VIEW_BLOCKS if len(VIEW_BLOCKS) > 1 else {}
OUT = config["output_dir"]
# high-res voxels between the stored displacement field's nodes (deform.field_shrink resolved)
FIELD_SHRINK = field_shrink(config["deform"])


CHANNELS = moving_channels(config)  # (label, image entry): the output's channels, in order
# the input images as content (metadata and their files' sizes and times), in the params of
# every job that reads them: an image rewritten at the same path re-runs them
INPUTS = input_fingerprints(IMAGES, open_moving_channels(config)[1:])


wildcard_constraints:
    tile=TILE_ID_PATTERN,
    batch=TILE_ID_PATTERN,
    level=r"[1-9]\d*",
    view="|".join(VIEWS),


SET = config.get("set") or {"name": None, "reuse": {}}
REUSE = SET["reuse"]


def code_version(script):
    """The code digest of the script ``scripts/<script>.py``, carried in its params; over the
    script and every module of ours it imports (bigstream_workflow.provenance.script_digest),
    so editing a module re-runs only the jobs whose scripts use it."""
    return script_digest(workflow.source_path(f"../scripts/{script}.py"))


def written_here(*parts):
    """Path of a file this run writes (outputs, logs, benchmarks): under output_dir."""
    return os.path.join(OUT, *parts)


def benchmark_path(name):
    """The benchmark file of a job of the rule `name` (bigstream_workflow.layout.RULES)."""
    return written_here("benchmarks", benchmark_file(name))


def result(*parts):
    """Path of a result this run reads: under output_dir, or, for a stage another set of a
    rounds/sweep run computes (config `set.reuse`: result path prefix -> that set's
    output_dir), under that set's folder (the longest prefix wins)."""
    path = "/".join(parts)
    for depth in range(len(parts), 0, -1):
        folder = REUSE.get("/".join(parts[:depth]))
        if folder is not None:
            return os.path.join(folder, path)
    return written_here(*parts)


def plan_config():
    """The part of the config the plan depends on."""
    keys = ("fixed", "moving", "global_affine", "local_affine", "deform", "resample")
    return {key: config[key] for key in keys}


def image_config():
    """The part of the config that says where the images are."""
    return {role: config[role] for role in ("fixed", "moving")}


def deform_block_config():
    """The `deform` keys a block's registration reads (`DeformParams`): changing the others
    (the stored field's resolution, the inverse, the batching) leaves the blocks as they are."""
    fields = DeformParams.__dataclass_fields__
    return {key: value for key, value in config["deform"].items() if key in fields}


def masked(role):
    """Whether an image has a foreground mask (a mask file, or the automatic one)."""
    return bool(config[role].get("mask")) or config["foreground"]["auto"] != "none"


def mask_files(role):
    """The image's mask on its low-res grid, as a list (empty without a mask)."""
    return [result("masks", f"{role}.npy")] if masked(role) else []


# Memory and time grow with the retry attempt, counting only attempts that did not fail on
# a full or unwritable disk (@resource_attempts: bigstream_workflow.retries); every resource
# function of `attempt` is decorated (tests/test_storage_errors.py checks).
@resource_attempts
def refine_mem_mb(wildcards, attempt):
    """Memory of the global refinement: its samples and their windows (not the levels)."""
    refine = config["global_affine"]["refine"]
    return refine_job_mem_mb(refine["samples"], max(refine["shrink_factors"]), attempt)


@resource_attempts
def mask_mem_mb(wildcards, attempt):
    """Memory of writing one image's low-res mask: a block with its halo and the threshold's
    sample (automatic), or a plane of the low-res grid (a mask file)."""
    lowres = IMAGES[wildcards.image]["lowres"]
    if config[wildcards.image].get("mask"):
        return mask_job_mem_mb(0, 0, lowres.shape[1] * lowres.shape[2], attempt)
    halo = (4 * config["foreground"]["smooth_um"] / np.asarray(lowres.spacing) + 0.5).astype(int)
    block = np.minimum(masks.BLOCK + 2 * halo, lowres.shape)
    return mask_job_mem_mb(int(np.prod(block)), masks.SAMPLE_VOXELS, 0, attempt)


@resource_attempts
def mask_runtime_min(wildcards, attempt):
    """Time of writing one image's low-res mask: two passes over the level (the threshold's
    sample, then the mask), block by block."""
    return runtime_min(2 * int(np.prod(IMAGES[wildcards.image]["lowres"].shape)), attempt)


def keypoint_grid_config():
    """The part of the global_affine config that lays out the key-point tiles."""
    return {key: config["global_affine"][key] for key in ("blocksize", "min_radius", "max_radius")}


def keypoint_tables(role):
    """Key point tables of every low-res tile of one image."""
    return [result("global", "keypoints", role, f"{t}.parquet") for t in TILES[f"keypoints_{role}"]]


def keypoint_benchmarks(role):
    """Benchmark files (wall time, peak memory) of the key point jobs of one image, where
    the set that detected them left them."""
    layout = RULES["detect_keypoints"]
    folder = REUSE.get(layout.result.format(image=role), OUT)
    return [
        os.path.join(folder, "benchmarks", benchmark_file("detect_keypoints", image=role, tile=t))
        for t in TILES[f"keypoints_{role}"]
    ]


@resource_attempts
def keypoints_mem_mb(wildcards, attempt):
    """Memory of a key point job: its tile's halo as read, the working arrays on its finest
    octave."""
    tile = TILES[f"keypoints_{wildcards.image}"][wildcards.tile]
    first = first_octave(config["global_affine"]["min_radius"])
    return keypoint_job_mem_mb(tile.halo_voxels, first, attempt)


@resource_attempts
def keypoints_runtime_min(wildcards, attempt):
    """Minutes for a key point job, from its halo voxels (generous: about 1 Mvoxel/s)."""
    return runtime_min(TILES[f"keypoints_{wildcards.image}"][wildcards.tile].halo_voxels, attempt)


@resource_attempts
def match_mem_mb(wildcards, attempt):
    """Memory of the matching job: neighbourhoods of nspots points per image."""
    ga = config["global_affine"]
    return match_job_mem_mb(ga["nspots"], ga["cc_radius"], attempt)


@resource_attempts
def local_tile_mem_mb(wildcards, attempt):
    """Memory of a local affine job, from its tile's halo voxels."""
    return local_job_mem_mb(TILES["local_affine"][wildcards.tile].halo_voxels, attempt)


@resource_attempts
def local_tile_runtime_min(wildcards, attempt):
    """Minutes for a local affine job (generous: about 1 Mvoxel/s)."""
    return runtime_min(TILES["local_affine"][wildcards.tile].halo_voxels, attempt)


@resource_attempts
def settle_mem_mb(wildcards, attempt):
    """Memory of settling the local tiles: one tile's proof at a time (a fill proves itself)."""
    halo = max(tile.halo_voxels for tile in TILES["local_affine"].values())
    return local_job_mem_mb(halo, attempt)


@resource_attempts
def settle_runtime_min(wildcards, attempt):
    """Minutes to settle the local tiles: up to every tile filled and proved, ~1 s each."""
    return settle_job_runtime_min(len(TILES["local_affine"]), attempt)


def batch_voxels(stage, wildcards):
    """Halo voxels of each block of a job's batch (the blocks run one after the other)."""
    return [tile.halo_voxels for tile in BATCHES[stage][wildcards.batch]]


@resource_attempts
def resample_mem_mb(wildcards, attempt):
    """Memory of a resampling job, from its largest block's voxels."""
    return resample_job_mem_mb(max(batch_voxels("resample", wildcards)), attempt)


@resource_attempts
def resample_runtime_min(wildcards, attempt):
    """Minutes for a resampling job (generous: about 1 Mvoxel/s per channel)."""
    return runtime_min(sum(batch_voxels("resample", wildcards)) * len(CHANNELS), attempt)


def view_store(view):
    """The OME-Zarr of a low-res view (``global``, ``local``) this run writes."""
    return written_here(view, "moving_lowres_aligned.ome.zarr")


def view_record(view, *parts):
    """A record of a low-res view's jobs (its store's token, its blocks', its completion)."""
    return written_here(view, "moving_lowres_aligned", *parts)


def view_transform_files(wildcards):
    """The transform a low-res view shows: the global affine, and for ``local`` the local
    affines too."""
    files = affine_transform_files()
    return files[:1] if wildcards.view == "global" else files


def view_block_records(wildcards):
    """The records of a view's block jobs (none for a level of one batch)."""
    return [view_record(wildcards.view, "blocks", f"{batch}.json") for batch in VIEW_BATCHES]


@resource_attempts
def view_mem_mb(wildcards, attempt):
    """Memory of a view job: one block resampled at a time (its pyramid: a chunk at a time)."""
    return resample_job_mem_mb(int(np.prod(VIEW_BLOCK)), attempt)


@resource_attempts
def view_block_runtime_min(wildcards, attempt):
    """Minutes for a view's batch of blocks (a quarter of resampling's rate: the local
    affines' blend per voxel)."""
    voxels = sum(tile.halo_voxels for tile in VIEW_BATCHES[wildcards.batch])
    return runtime_min(4 * voxels, attempt)


@resource_attempts
def view_finalize_runtime_min(wildcards, attempt):
    """Minutes to finish a view: its coarser levels from level 1 (an eighth of the level's
    voxels), or for a level of one batch the whole view."""
    voxels = int(np.prod(IMAGES["fixed"]["lowres"].shape))
    return runtime_min(voxels // 8 if VIEW_BATCHES else 4 * voxels, attempt)


def accuracy_ncc_records():
    """The partial sums of the foreground NCC, one record per batch of low-res blocks."""
    return [written_here("qc", "accuracy", "ncc", f"{batch}.json") for batch in NCC_BATCHES]


def accuracy_stage_count():
    """Transforms the accuracy measures: the identity, then each stage's."""
    return 1 + len(final_transform_files())


@resource_attempts
def accuracy_level_mem_mb(wildcards, attempt):
    """Memory of the fixed foreground's level: its sample, read one NCC block at a time."""
    block = int(np.prod(NCC_BLOCK))
    return accuracy_level_job_mem_mb(block, masks.SAMPLE_VOXELS, attempt)


@resource_attempts
def accuracy_level_runtime_min(wildcards, attempt):
    """Minutes for the fixed foreground's level: one pass over the fixed low-res level."""
    return runtime_min(int(np.prod(IMAGES["fixed"]["lowres"].shape)), attempt)


@resource_attempts
def accuracy_ncc_mem_mb(wildcards, attempt):
    """Memory of an NCC job: one low-res block at a time, with the moving block pulled on it."""
    blocks = NCC_BATCHES[wildcards.batch]
    return accuracy_ncc_job_mem_mb(max(tile.halo_voxels for tile in blocks), attempt)


@resource_attempts
def accuracy_ncc_runtime_min(wildcards, attempt):
    """Minutes for an NCC job: its blocks' voxels pulled through each stage's transform (a
    quarter of resampling's rate, as the previews: the local affines' blend per voxel)."""
    voxels = sum(tile.halo_voxels for tile in NCC_BATCHES[wildcards.batch])
    return runtime_min(4 * voxels * accuracy_stage_count(), attempt)


def pyramid_inputs(wildcards):
    """The records of the blocks of the level below that a pyramid job's blocks read."""
    level = int(wildcards.level)
    below = pyramid_grid(level - 1)
    batches = {
        batch_id(index, PER_JOB["resample"])
        for tile in BATCHES[pyramid_grid(level)][wildcards.batch]
        for index in pyramid_sources(tile, LEVELS[level - 1], config["resample"]["blocksize"])
    }
    return [pyramid_record(level - 1, batch) for batch in sorted(batches)]


def pyramid_record(level, batch):
    """The record a job of level ``level`` of the output's pyramid leaves (0: resampling)."""
    if level == 0:
        return written_here("aligned", "blocks", f"{batch}.json")
    return written_here("aligned", "levels", str(level), f"{batch}.json")


def pyramid_records():
    """Every record of every level of the output's pyramid."""
    return [
        pyramid_record(level, batch)
        for level in range(len(LEVELS))
        for batch in BATCHES[pyramid_grid(level)]
    ]


@resource_attempts
def finalize_runtime_min(wildcards, attempt):
    """Minutes to finalise the output: its coarsest level's voxels, per channel."""
    return runtime_min(int(np.prod(LEVELS[-1])) * len(CHANNELS), attempt)


@resource_attempts
def pyramid_mem_mb(wildcards, attempt):
    """Memory of a pyramid job: one write unit of its level at a time (a shard, one resample
    block, or a chunk)."""
    blocksize = config["resample"]["blocksize"]
    unit = blocksize if config["output"]["shard"] else block_chunks(blocksize)
    return pyramid_job_mem_mb(int(np.prod(unit)), attempt)


@resource_attempts
def pyramid_runtime_min(wildcards, attempt):
    """Minutes for a pyramid job: it reads its blocks' voxels times the factors, per channel."""
    blocks = BATCHES[pyramid_grid(int(wildcards.level))][wildcards.batch]
    return runtime_min(8 * sum(tile.halo_voxels for tile in blocks) * len(CHANNELS), attempt)


@resource_attempts
def deform_mem_mb(wildcards, attempt):
    """Memory of a deform job, from its largest block's halo voxels."""
    return deform_job_mem_mb(max(batch_voxels("deform", wildcards)), attempt)


@resource_attempts
def deform_runtime_min(wildcards, attempt):
    """Minutes for a deform job (generous: about 0.1 Mvoxel/s)."""
    return deform_job_runtime_min(sum(batch_voxels("deform", wildcards)), attempt)


@resource_attempts
def field_region_mem_mb(wildcards, attempt):
    """Memory of a job stitching or inverting the field regions (block cores) of a batch,
    from its largest region's nodes of the stored field."""
    cores = [node_tile(tile, FIELD_SHRINK).core for tile in BATCHES["deform"][wildcards.batch]]
    nodes = max((z1 - z0) * (y1 - y0) * (x1 - x0) for (z0, z1), (y0, y1), (x0, x1) in cores)
    return field_region_job_mem_mb(nodes, attempt)


@resource_attempts
def field_region_runtime_min(wildcards, attempt):
    """Minutes for a job stitching or inverting the field regions of a batch."""
    return runtime_min(sum(batch_voxels("deform", wildcards)), attempt)


def deform_block_file(tile_id, suffix):
    """A deform block's field (".npy") or report (".json"), in its batch's folder."""
    batch = BATCH_OF["deform"][tile_id]
    return result("deform", "blocks", batch, f"{tile_id}{suffix}")


def stitch_blocks(wildcards):
    """The blocks a stitching job's regions blend: its batch's and every block next to one
    (each found once: planning stays a few lookups per block at any batch size)."""
    return tiles_around(BATCHES["deform"][wildcards.batch], TILES["deform"])


def stitch_inputs(wildcards):
    """The folders of the deform batches that hold a stitching job's blocks and neighbours."""
    batches = {BATCH_OF["deform"][block.id] for block in stitch_blocks(wildcards)}
    return [result("deform", "blocks", batch) for batch in sorted(batches)]


def affine_transform_files():
    """The files of the affine stages: global affine, then the local field if enabled."""
    files = [result("global", "affine.txt")]
    if config["local_affine"]["enabled"]:
        files.append(result("local", "field.json"))
    return files


def final_transform_files():
    """The files of the full transform: the affine stages, then the displacement field."""
    files = affine_transform_files()
    if config["deform"]["enabled"]:
        files.append(result("transform", "field.json"))
    return files


def point_entries():
    """`points` entries by output file name: <file name>_in_<other space>.<ext>."""
    entries = {}
    for entry in config["points"]:
        stem, ext = os.path.splitext(os.path.basename(entry["path"]))
        other = "fixed" if entry["space"] == "moving" else "moving"
        entries[f"{stem}_in_{other}{ext}"] = entry
    return entries


POINTS = point_entries()


def point_transform_files(wildcards):
    """What `warp_points` needs: the full transform and, for a table in moving space
    with a deformation, the deformation's inverse."""
    files = final_transform_files()
    if POINTS[wildcards.table]["space"] == "moving" and config["deform"]["enabled"]:
        files.append(result("transform", "inverse_field.json"))
    return files


def qc_view_files():
    """What the QC report shows over the fixed image, in stage order: view name -> (file
    name of its overlay, OME-Zarr on the fixed grid, the file that says that Zarr is
    complete, the channel shown (None: a z, y, x image); None, None, None: the moving image
    as it is)."""
    views = {"before": ("overlay_0_before.png", None, None, None)}
    lowres = {"global affine": "global"}
    if config["local_affine"]["enabled"]:
        lowres["local affines"] = "local"
    for index, (view, stage) in enumerate(lowres.items(), start=1):
        views[view] = (
            f"overlay_{index}_{view.replace(' ', '_')}.png",
            result(stage, "moving_lowres_aligned.ome.zarr"),
            result(stage, "moving_lowres_aligned", "complete.json"),
            None,
        )
    views["aligned (all stages)"] = (
        "overlay_3_aligned.png",
        result("aligned.ome.zarr"),
        result("aligned", "complete.json"),
        0,  # the registration channel
    )
    return views


def qc_tiled():
    """Whether a tiled stage ran (its per-tile heat maps go into the report)."""
    return config["local_affine"]["enabled"] or config["deform"]["enabled"]


def final_targets():
    """The targets of `all`: every result, and the run's summary of them."""
    return [*final_results(), written_here("summary.txt")]


def tile_counts():
    """Tiles per stage grid, for the run's summary."""
    return {name: len(tiles) for name, tiles in GRIDS.items()}


def final_results():
    """Every result of this registration that the config asks for."""
    targets = [result("plan", "images.json")]
    targets += [result("global", name) for name in ("affine.txt", "report.json")]
    targets.append(result("global", "moving_lowres_aligned", "complete.json"))
    if config["local_affine"]["enabled"]:
        targets += [result("local", name) for name in ("report.tsv", "field.json")]
        targets.append(result("local", "moving_lowres_aligned", "complete.json"))
    if config["deform"]["enabled"]:
        targets.append(result("deform", "report.tsv"))
        targets.append(result("transform", "field.json"))
    if inverse_wanted(config):
        targets.append(result("transform", "inverse_field.json"))
    targets.append(result("aligned", "complete.json"))
    targets += [result("points", name) for name in POINTS]
    if config.get("ground_truth"):
        targets.append(result("qc", "accuracy.json"))
    targets.append(result("qc", "metrics.tsv"))
    return targets
