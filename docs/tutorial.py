# %% [markdown]
# # Tutorial: register a pair step by step, then as one workflow run
#
# This is the walk of the bigstream tutorial, redone with this package: read an N5 pair
# and its spacing; a global affine from key points, applied and looked at; local affines
# per tile, applied in memory, lazily or into Zarr; deformable alignment of the high-res
# level block by block, the field written, applied and looked at. It runs on a synthetic
# pair that you make yourself (nothing to download), whose true transform is known, so
# every stage reports how far it is from the truth.
#
# - **Part 1** uses the Python API (`bigstream_core.api`), one step at a time, as in a
#   notebook.
# - **Part 2** does the same registration as one Snakemake run: a config file and one
#   command, on a workstation or a cluster.
#
# Coming from bigstream? [migration.md](migration.md) maps each bigstream call to ours.
#
# **Run it** from the repository root (two to three minutes on 2 cores):
#
# ```bash
# .venv/bin/python docs/tutorial.py   # data: demo_output/tutorial/, figures: docs/figures/
# ```
#
# or open `docs/tutorial.py` as a notebook (it is a
# [jupytext](https://jupytext.readthedocs.io) "percent" script). This page is rendered from
# that script by `docs/render_tutorial.py`; `tests/test_tutorial.py` runs the script end to
# end and checks every number and figure below against the known transform.

# %%
import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from matplotlib.figure import Figure

from bigstream_core.accuracy import evaluate
from bigstream_core.api import (
    affine_refine,
    apply_global_affine,
    apply_local_affines,
    apply_position_field,
    ransac_affine,
    tiled_deformable_align,
    tiled_ransac_affine,
    transform_points,
)
from bigstream_core.io import open_image
from bigstream_core.phantom import GroundTruth, preset, write_pair

HERE = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
ROOT = next(p for p in [HERE, *HERE.parents] if (p / "config" / "demo.yaml").is_file())
parser = argparse.ArgumentParser(description="The bigstream-workflow tutorial.")
parser.add_argument("--work", type=Path, default=ROOT / "demo_output" / "tutorial", help="data")
parser.add_argument("--figures", type=Path, default=ROOT / "docs" / "figures", help="PNGs")
args, _ = parser.parse_known_args()  # (a notebook kernel passes arguments of its own)
DATA, RESULTS, FIGURES = args.work / "data", args.work / "api", args.figures
RESULTS.mkdir(parents=True, exist_ok=True)
FIGURES.mkdir(parents=True, exist_ok=True)
np.set_printoptions(precision=3, suppress=True)

# %% [markdown]
# ## Part 1: the Python API, step by step
#
# ### The data: an N5 pair with a known transform
#
# The bigstream tutorial reads `fix.n5` and `mov.n5`, each with a `lowres` and a `highres`
# dataset whose attributes carry `pixelResolution` and `downsamplingFactors`. The phantom
# generator writes a pair in that same layout: cells in a lumpy tissue, and a moving image
# made from the fixed one through a known affine and a smooth deformation of up to 4 µm.
# This is the pair `python3 tasks.py demo` uses; on the command line it is
# `python -m bigstream_core.phantom OUT_DIR --preset small --deform-um 4`.

# %%
pair_files = write_pair(DATA, dataclasses.replace(preset("small"), deform_amplitude_um=4.0))
for name, path in pair_files.items():
    print(f"{name:15} {path}")

# %% [markdown]
# ### Open both images lazily; spacing and axis order
#
# `open_image` reads metadata only; voxels are read when a step needs them. Every array,
# spacing, coordinate and matrix in this package is in **z, y, x** order, in **µm**. N5
# keeps its metadata in x, y, z order; `open_image` reverses it, once, at the I/O boundary.
#
# The one line that differs from the old bigstream tutorial: it read
# `fix_zarr['/dapi/lowres'][...].transpose(2, 1, 0)` to work in x, y, z, and built the
# spacing from `pixelResolution * downsamplingFactors` as written in the file (x, y, z).
# Here there is no transpose and no arithmetic: `fix.shape` and `fix.spacing` are z, y, x.

# %%
fix = open_image(DATA / "fixed.n5", "lowres")
mov = open_image(DATA / "moving.n5", "lowres")
fix_hr = open_image(DATA / "fixed.n5", "highres")
mov_hr = open_image(DATA / "moving.n5", "highres")
for label, image in [("fixed low-res", fix), ("moving low-res", mov), ("fixed high-res", fix_hr)]:
    print(f"{label:15} shape {image.shape}  spacing {image.spacing} µm  origin {image.origin} µm")
attributes = json.loads((DATA / "fixed.n5" / "lowres" / "attributes.json").read_text())
print(
    "in the N5 file (x, y, z):",
    attributes["dimensions"],
    attributes["pixelResolution"],
    "downsamplingFactors",
    attributes["downsamplingFactors"],
)

# %% [markdown]
# A low-res voxel is the mean of 2 x 2 x 2 high-res ones, so its centre sits half a
# high-res voxel in: the low-res origin is not 0. Both levels agree in µm.
#
# ### How we measure accuracy
#
# `truth.json` holds the known transform `T(x) = A (x + d(x))`, fixed -> moving, µm, z y x.
# A registration is judged by its **target registration error** (TRE): the distance in µm
# between where it sends a point and where the truth sends it, averaged over points of the
# fixed image's foreground (`bigstream_core.accuracy.evaluate`; the workflow's
# `qc/accuracy.json` is the same measure). `transform_points` carries points through any
# prefix of the registration: global affine, local affines, deformation.

# %%
truth = GroundTruth.from_json(DATA / "truth.json")


def tre(**registration) -> float:
    """Mean TRE (µm) of a registration so far, over the fixed high-res foreground."""

    def estimate(points):
        return transform_points(points, fix_hr.spacing, **registration)

    return evaluate(estimate, truth, fix_hr, mov_hr)["mean_um"]


tre_um = {"before": tre()}
print(f"before registration: TRE {tre_um['before']:.2f} µm")

# %% [markdown]
# The figures put the fixed image in magenta and the moving one in green on the same plane
# (the middle z plane): where they agree the cells turn white.


# %%
shown = {}  # figure -> the planes it shows, fixed first (tests/test_tutorial.py checks them)


def compare(name, image, panels, extra=0):
    """A figure of the middle z plane of ``image``'s grid: the fixed image (magenta) under
    each moving plane (green) of ``panels``, a list of (plane, title); x and y in µm."""
    fixed_plane = image.read(
        (slice(image.shape[0] // 2, image.shape[0] // 2 + 1),) + (slice(None),) * 2
    )[0]
    low, high = np.percentile(fixed_plane, [1, 99.5])
    (_, oy, ox), (_, sy, sx), (ny, nx) = image.origin, image.spacing, fixed_plane.shape
    extent = (ox - sx / 2, ox + (nx - 0.5) * sx, oy + (ny - 0.5) * sy, oy - sy / 2)
    figure = Figure(figsize=(4.2 * (len(panels) + extra), 4.6), layout="constrained")
    axes = figure.subplots(1, len(panels) + extra, squeeze=False)[0]
    for ax, (plane, title) in zip(axes, panels, strict=False):
        f, m = (np.clip((p.astype(float) - low) / (high - low), 0, 1) for p in (fixed_plane, plane))
        ax.imshow(np.stack([f, m, f], axis=-1), extent=extent)
        ax.set(title=title, xlabel="x (µm)", ylabel="y (µm)")
    figure.suptitle(f"{image.dataset} level, middle z plane: fixed (magenta), moving (green)")
    shown[name] = [fixed_plane, *(plane for plane, _ in panels)]
    return figure, axes


z, z_hr = fix.shape[0] // 2, fix_hr.shape[0] // 2  # the middle planes of the two levels

# %% [markdown]
# ### Global affine from key points
#
# `ransac_affine` finds blobs in both low-res images (Laplacian of Gaussian, radii in
# voxels), matches them by the correlation of their neighbourhoods (`cc_radius` voxels,
# `match_threshold`), and fits the affine with RANSAC (`align_threshold` µm).
#
# The bigstream tutorial used `min_radius=6, max_radius=20, match_threshold=0.75`, chosen
# for the nuclei of its own low-res level. Radii must match the objects *in voxels of the
# level you register*: this pair's cells have radii of 2 to 10 high-res voxels, so 1 to 5
# low-res voxels, hence 1.5 to 5. Its low-res level is only 40 x 80 x 80 voxels, so the
# neighbourhood correlated around a point is smaller too: a point closer than `cc_radius`
# to the edge is dropped, and with the default 12 only the middle 16 of the 40 z planes
# would keep any; `cc_radius=8` keeps 24. Key points are searched in tiles of 32 x 64 x 64
# voxels. These are the values of `config/demo.yaml`, which part 2 runs (its
# `match_threshold` is the default, 0.7); `config/config.yaml` keeps bigstream's 6 to 20
# as defaults for real data.

# %%
global_kwargs = dict(
    min_radius=1.5, max_radius=5, match_threshold=0.7, cc_radius=8, blocksize=(32, 64, 64)
)
affine, report = ransac_affine(fix, mov, None, None, **global_kwargs, return_report=True)
print({key: report[key] for key in ("matches", "inliers")})
ransac_tre = tre(global_affine=affine)

# %% [markdown]
# `affine_refine` then polishes the key points' affine by intensities: it maximises a local
# normalised cross-correlation of the two images under the affine (with a smooth
# illumination gain of the moving image fitted alongside), and keeps the result only if
# that metric rises. The workflow does the same by default (`global_affine.refine`).

# %%
affine, refine_report = affine_refine(fix, mov, None, None, affine, return_report=True)
print(refine_report["status"], refine_report["metric_before"], "->", refine_report["metric_after"])
print("estimated affine (fixed -> moving, z y x, µm):\n", affine)
print("known affine A of T(x) = A (x + d(x)):\n", truth.affine)
tre_um["global affine"] = tre(global_affine=affine)
print(
    f"TRE: before {tre_um['before']:.2f} µm, RANSAC affine {ransac_tre:.2f} µm, refined"
    f" {tre_um['global affine']:.2f} µm, the known A alone {tre(global_affine=truth.affine):.2f} µm"
)

# %% [markdown]
# Do not expect the two matrices to agree entry by entry. The deformation `d` is not zero
# on average over this small sample, so the affine that best explains the pair is not `A`;
# and a small difference in rotation moves the translation column a lot, because it
# pivots about the origin, far from the tissue. Where the points land is what counts: the
# TRE. No affine can do much better here; what is left is the deformation's job.
#
# `apply_global_affine` resamples the moving image into the fixed grid (a numpy array).
# The "before" picture is the same call with the identity.

# %%
before = apply_global_affine(fix, mov, None, None, np.eye(4))
aligned = apply_global_affine(fix, mov, None, None, affine)
figure, _ = compare(
    "1_global_affine.png",
    fix,
    [
        (before[z], f"before: TRE {tre_um['before']:.2f} µm"),
        (aligned[z], f"global affine: TRE {tre_um['global affine']:.2f} µm"),
    ],
)
figure.savefig(FIGURES / "1_global_affine.png", dpi=100)

# %% [markdown]
# ![global affine](figures/1_global_affine.png)
#
# ### Local affines per tile
#
# `tiled_ransac_affine` cuts the fixed low-res image into overlapping tiles and fits one
# affine per tile between the tile and the moving image *under the global affine*. Tiles
# of 20 x 40 x 40 low-res voxels (37 x 74 x 74 µm) are small against the deformation's
# wavelengths (125-250 µm), so within a tile it looks affine. A tile that fails, or
# disagrees with its neighbours, takes their average; the report says which and why.

# %%
TILES = dict(blocksize=(20, 40, 40), overlap=0.25)  # low-res voxels; fraction added each side
local_kwargs = dict(min_radius=1.5, max_radius=5, match_threshold=0.7, cc_radius=6, min_matches=12)
local, tiles = tiled_ransac_affine(
    fix, mov, None, None, **local_kwargs, **TILES, global_affine=affine, return_report=True
)
print("affines per tile:", local.shape)
print(tiles[["tile", "matches", "inliers", "status", "filled"]].to_string(index=False))
# the functions working on the high-res grid take the same tile grid as local_*, and how
# much coarser than their grid it was fitted on
ON_HIGHRES = dict(
    local_blocksize=TILES["blocksize"], local_overlap=TILES["overlap"], local_level_factor=2
)
tre_um["local affines"] = tre(global_affine=affine, local_affines=local, **ON_HIGHRES)
print(
    f"TRE: global affine {tre_um['global affine']:.2f} µm -> "
    f"+ local affines {tre_um['local affines']:.2f} µm"
)

# %% [markdown]
# `apply_local_affines` applies the global affine and the blended local affines, in the
# three ways of the bigstream tutorial: into memory (numpy), lazily (a dask array: nothing
# is computed until you ask, and then only the blocks you ask for), or block by block into
# an OME-Zarr on disk (its image handle is returned).

# %%
in_memory = apply_local_affines(fix, mov, None, None, local, **TILES, global_affine=affine)
lazy = apply_local_affines(fix, mov, None, None, local, **TILES, global_affine=affine, lazy=True)
on_disk = RESULTS / "local_aligned.ome.zarr"
written = apply_local_affines(
    fix, mov, None, None, local, **TILES, global_affine=affine, write_path=on_disk
)
print(type(in_memory).__name__, in_memory.shape, in_memory.dtype)
print(lazy)
print(written)
plane = lazy[z].compute()  # computes only the blocks that hold plane z
modes_agree = np.array_equal(plane, in_memory[z]) and np.array_equal(
    written.read((slice(None),) * 3), in_memory
)
print("the three modes agree:", modes_agree)

# %%
figure, _ = compare(
    "2_local_affines.png",
    fix,
    [
        (aligned[z], f"global affine: TRE {tre_um['global affine']:.2f} µm"),
        (plane, f"+ local affines: TRE {tre_um['local affines']:.2f} µm"),
    ],
)
figure.savefig(FIGURES / "2_local_affines.png", dpi=100)

# %% [markdown]
# ![local affines](figures/2_local_affines.png)
#
# ### Deformable alignment of the high-res level, block by block
#
# `tiled_deformable_align` cuts the fixed **high-res** image into overlapping blocks
# (40 x 80 x 80 voxels here: 8 blocks) and registers each against the moving image pulled
# through the affines found so far, with a greedy multi-resolution ascent of the local
# normalised cross-correlation. The blocks' fields are blended into one displacement field
# `d` (float32, shape (Z, Y, X, 3), µm, z y x components) on the fixed high-res grid; the
# full transform is `T(x) = G(L(x + d(x)))`. With `write_path` the field is written to
# Zarr region by region and never held whole in memory. `mask_threshold` leaves the dark
# background (100 counts here, tissue about 220) out of the metric.

# %%
deform_blocksize, deform_kwargs = (40, 80, 80), {"mask_threshold": 150}
field = tiled_deformable_align(
    fix_hr,
    mov_hr,
    None,
    None,
    deform_blocksize,
    global_affine=affine,
    local_affines=local,
    deform_kwargs=deform_kwargs,
    write_path=RESULTS / "field.zarr",
    **ON_HIGHRES,
)
print("field:", field.shape, field.dtype, dict(field.attrs))
tre_um["deformable"] = tre(global_affine=affine, local_affines=local, field=field, **ON_HIGHRES)
print(
    f"TRE: + local affines {tre_um['local affines']:.2f} µm -> "
    f"+ deformation {tre_um['deformable']:.3f} µm"
)

# %% [markdown]
# `apply_position_field` pulls the high-res moving image through the whole transform in
# one interpolation, block by block; here straight into an OME-Zarr. The "before" picture
# is the high-res moving image under the affines only (`apply_local_affines` on the
# high-res grid, lazily, one plane).

# %%
result = apply_position_field(
    fix_hr,
    mov_hr,
    None,
    None,
    RESULTS / "field.zarr",
    (64, 64, 64),
    global_affine=affine,
    local_affines=local,
    write_path=RESULTS / "aligned.ome.zarr",
    **ON_HIGHRES,
)
print(result)
affines_only = apply_local_affines(
    fix_hr, mov_hr, None, None, local, **TILES, global_affine=affine, fix_level_factor=2, lazy=True
)
one_plane = (slice(z_hr, z_hr + 1), slice(None), slice(None))
figure, axes = compare(
    "3_deformable.png",
    fix_hr,
    [
        (affines_only[z_hr].compute(), f"affines: TRE {tre_um['local affines']:.2f} µm"),
        (result.read(one_plane)[0], f"+ deformation: TRE {tre_um['deformable']:.3f} µm"),
    ],
    extra=1,
)
extent = axes[1].get_images()[0].get_extent()
size = axes[2].imshow(np.linalg.norm(field[z_hr], axis=-1), cmap="viridis", extent=extent)
axes[2].set(title="|d|: what the affines left", xlabel="x (µm)")
figure.colorbar(size, ax=axes[2], label="µm", shrink=0.8)
figure.savefig(FIGURES / "3_deformable.png", dpi=100)

# %% [markdown]
# ![deformable](figures/3_deformable.png)
#
# At this scale the last step is hard to see by eye (a quarter of a micrometre is a
# quarter of a voxel); the TRE is where it shows.
#
# ## Part 2: the same registration as one workflow run
#
# The workflow runs the same stages as jobs, one per tile or block, each writing its own
# files, so that a crashed or pre-empted job is re-run alone and a cluster runs thousands
# of them. Everything is in one config file: `config/demo.yaml` is the one for this pair
# (only what differs from the documented defaults in `config/config.yaml`). Its stage
# parameters are the ones part 1 passed to the API. Here it is with the paths of this run:

# %%
config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
config.update(
    fixed={"path": str(DATA / "fixed.n5")},
    moving={"path": str(DATA / "moving.n5")},
    output_dir=str(args.work / "workflow"),
    ground_truth=str(DATA / "truth.json"),
)
config_file = args.work / "demo.yaml"
config_file.write_text(yaml.safe_dump(config, sort_keys=False, default_flow_style=None))
print(config_file.read_text())

# %% [markdown]
# One command, from the repository root, runs it all on this machine (`python3 tasks.py
# demo` runs the same on `config/demo.yaml` as it is):
#
# ```bash
# snakemake --profile profiles/local --configfile demo_output/tutorial/demo.yaml
# ```

# %%
command = ["snakemake", "--profile", "profiles/local", "--configfile", str(config_file)]
subprocess.run([sys.executable, "-m", *command], cwd=ROOT, check=True)

# %% [markdown]
# Everything lands under `output_dir` (the README's "What a run writes" lists every file):
#
# | path | what |
# |---|---|
# | `global/affine.txt` | the global affine: 4x4, z y x, µm, fixed -> moving (`_xyz`: x y z) |
# | `local/affines.npy` | one affine per low-res tile, shape (tiles_z, tiles_y, tiles_x, 4, 4) |
# | `transform/field.zarr` | the displacement field `d` on every 2nd voxel (its resolution) |
# | `aligned.ome.zarr` | the high-res moving image through the whole transform, with a pyramid |
# | `qc/accuracy.json` | TRE before and after each stage (set when `ground_truth` is given) |
# | `logs/`, `benchmarks/` | one log, and the time and peak memory, per job |

# %%
output = Path(config["output_dir"])
print(sorted(path.name for path in output.iterdir()))
accuracy = json.loads((output / "qc" / "accuracy.json").read_text())
for row, (stage, api_um) in zip(accuracy["stages"], tre_um.items(), strict=True):
    print(f"{row['transform']:45} workflow {row['mean_um']:.3f} µm   API ({stage}) {api_um:.3f} µm")
workflow_aligned = open_image(output / "aligned.ome.zarr")
figure, axes = compare(
    "4_workflow.png",
    fix_hr,
    [(workflow_aligned.read(one_plane)[0], f"aligned.ome.zarr: TRE {accuracy['mean_um']:.3f} µm")],
    extra=1,
)
names = ["before", "global", "+ local", "+ deform"]
x = np.arange(len(names))
axes[1].bar(x - 0.2, list(tre_um.values()), 0.4, label="Python API (part 1)")
axes[1].bar(x + 0.2, [row["mean_um"] for row in accuracy["stages"]], 0.4, label="workflow")
axes[1].set(
    xticks=x,
    xticklabels=names,
    yscale="log",
    ylabel="mean TRE (µm)",
    title="accuracy against the known transform",
)
axes[1].axhline(min(fix_hr.spacing), color="grey", linestyle=":", label="one high-res voxel")
axes[1].legend()
figure.savefig(FIGURES / "4_workflow.png", dpi=100)

# %% [markdown]
# ![workflow](figures/4_workflow.png)
#
# ### On a cluster
#
# The same config runs on SLURM (or LSF) with another profile: fill in `slurm_partition`
# and `slurm_account` in `profiles/slurm/profile.yaml` (LSF: `lsf_queue`, `lsf_project` in
# `profiles/lsf/profile.yaml`) and set `cores` to one node's, then, from a login node
# inside `screen` or `tmux`:
#
# ```bash
# snakemake --profile profiles/slurm --configfile demo_output/tutorial/demo.yaml
# ```
#
# Each tile job asks for memory and time computed from its tile size; re-running the same
# command after a failure redoes only what is missing. The README's "Run on a cluster"
# section has the details.
#
# ### Your own data
#
# Copy `config/demo.yaml`, point `fixed`, `moving` and `output_dir` at your data (and drop
# `ground_truth`), and size the key points to your objects in voxels of the low-res level:
# `min_radius`/`max_radius` about the smallest and largest object radius, `cc_radius` a few
# objects wide. Set `deform.mask_threshold` to your background level.
