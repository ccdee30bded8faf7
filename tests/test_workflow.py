"""The workflow through real Snakemake runs (CLI, profiles/local), on synthetic pairs."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
import zarr
from matplotlib.image import imread
from ome_zarr_models.v04 import Image as OmeImage
from skimage.filters import threshold_otsu

from bigstream_core.accuracy import foreground_ncc, grid_points, points_inside
from bigstream_core.affine_field import read_field
from bigstream_core.displacement import jacobian_determinant, open_field
from bigstream_core.io import ImageError, open_image
from bigstream_core.phantom import GroundTruth
from bigstream_core.resample import resample, voxel_centres
from bigstream_core.tiling import tile_grid
from bigstream_core.transforms import affine_map, apply_affine, chain, read_affine
from bigstream_workflow.export_transform import export, run_files
from bigstream_workflow.transform_files import from_inputs, load_transform
from tests.conftest import (
    deploy,
    digest,
    pair_config,
    run_snakemake,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("tutorial")]
WHOLE = (slice(None),) * 3


@pytest.fixture(scope="module")
def demo_pair(tutorial) -> Path:
    """The demo's pair as docs/tutorial.py wrote it (conftest's ``deformed_pair`` spec)."""
    return Path(tutorial["DATA"])


@pytest.fixture(scope="module")
def finished_run(tutorial, demo_pair, tmp_path_factory):
    """One complete run of the workflow on the demo's pair, with the demo's parameters: the
    run docs/tutorial.py makes (config/demo.yaml with its paths, through the snakemake CLI and
    profiles/local; tests/test_tutorial.py checks its stages against the API's), run again
    here with point tables to carry across, which adds only the jobs those need (the inverse
    field, the points). It runs as a lab deploys the workflow (:func:`deploy`: our Snakefile
    as a module of theirs), so the tests on ``work`` below run through that module too:
    with the same rules, the module finds the tutorial's results done. Its results are in
    ``config["output_dir"]``."""
    work = tmp_path_factory.mktemp("run")
    config = copy.deepcopy(tutorial["config"])
    assert Path(config["fixed"]["path"]).parent == demo_pair
    # spots to carry across: fixed foreground points, and where they truly lie in the moving
    truth = GroundTruth.from_json(demo_pair / "truth.json")
    fixed = open_image(demo_pair / "fixed.n5", "highres")
    points = foreground_points(fixed, truth, open_image(demo_pair / "moving.n5", "highres"))
    cells = pd.DataFrame({"z": points[:, 0], "y": points[:, 1], "x": points[:, 2]})
    cells["id"] = np.arange(len(cells))
    cells.to_parquet(work / "cells.parquet")
    moved = truth(points)
    spots = pd.DataFrame({"id": cells["id"], "z": moved[:, 0], "y": moved[:, 1], "x": moved[:, 2]})
    spots.to_csv(work / "spots.csv", index=False)
    config["points"] = [
        {"path": str(work / "cells.parquet"), "space": "fixed"},
        {"path": str(work / "spots.csv"), "space": "moving"},
    ]
    result = run_deployed(work, config)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "rule warp_points:" in log and "rule deform_block:" not in log  # the tutorial's run
    return work, config, result


def run_deployed(work: Path, config: dict, *args: str):
    """Snakemake in ``work`` through a deployment's Snakefile there (:func:`deploy`)."""
    return run_snakemake(work, config, *args, snakefile=deploy(work))


# The stages before the deformation, which the runs that vary how the deformation and the
# resampling are run take from the finished run instead of computing them again.
BEFORE_DEFORM = ("plan", "masks", "global", "local")


def start_at_the_deformation(finished: Path, results: Path) -> list[str]:
    """Copy the finished run's stages before the deformation into ``results`` (with their
    modification times: a run into ``results`` takes them as done) and return the targets
    of the deformation and after that the tests compare: the field, its inverse, the
    per-block report and the aligned image (not the QC, accuracy and points jobs)."""
    for stage in BEFORE_DEFORM:
        if (finished / stage).exists():
            shutil.copytree(finished / stage, results / stage)
    names = ("transform/field.json", "transform/inverse_field.json", "deform/report.tsv",
             "aligned/complete.json")  # fmt: skip
    return [str(results / name) for name in names]


def foreground_points(image, truth, moving):
    """Grid points over the image's foreground (Otsu) whose true image lies in ``moving``."""
    points = grid_points(image, 24)
    voxel = np.rint((points - image.origin) / np.asarray(image.spacing)).astype(int)
    values = image.read(WHOLE)[tuple(voxel.T)].astype(float)
    points = points[values > threshold_otsu(values)]
    return points[points_inside(truth(points), moving)]


def test_dry_run_lists_every_job_without_writing(tiny_pair, tmp_path):
    config = pair_config(tiny_pair, tmp_path / "results")
    result = run_snakemake(tmp_path, config, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    for rule in ("plan", "detect_keypoints", "match_keypoints", "fit_global_affine",
                 "fit_local_affine", "settle_local_affines", "deform_block", "stitch_field",
                 "finish_field", "resample_block", "all"):  # fmt: skip
        assert rule in result.stdout
    assert "invert_field" not in result.stdout  # nothing asks for the inverse
    assert not (tmp_path / "results").exists()
    spots = tmp_path / "spots.csv"
    spots.write_text("z,y,x\n1.0,2.0,3.0\n")
    moving_points = {"points": [{"path": str(spots), "space": "moving"}]}
    for asked in ({"deform": {"inverse": True}}, moving_points):
        result = run_snakemake(tmp_path, {**config, **asked}, "--dry-run")
        assert result.returncode == 0, result.stderr[-3000:]
        assert "invert_field" in result.stdout, asked
    config["deform"] = {"enabled": False}
    result = run_snakemake(tmp_path, config, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resample_block" in result.stdout and "deform_block" not in result.stdout
    assert "invert_field" not in result.stdout


@pytest.mark.parametrize("profile", ["slurm", "lsf"])
def test_the_cluster_profiles_plan_the_whole_run(tiny_pair, tmp_path, profile):
    """The production profiles parse and plan (no scheduler here: a dry run, which
    checks every option, the groups and every rule's resources)."""
    config = pair_config(tiny_pair, tmp_path / "results")
    result = run_snakemake(tmp_path, config, "--dry-run", profile=profile)
    assert result.returncode == 0, result.stderr[-3000:]
    for rule in ("deform_block", "stitch_field", "resample_block", "finalize_aligned"):
        assert f"rule {rule}:" in result.stdout, rule


def test_plan_records_images_in_zyx_and_the_grids(finished_run, demo_pair):
    _, config, _ = finished_run
    results = Path(config["output_dir"])
    plan = json.loads((results / "plan" / "images.json").read_text())
    for role in ("fixed", "moving"):
        for level in ("lowres", "highres"):
            image = open_image(demo_pair / f"{role}.n5", level)
            recorded = plan["images"][role][level]
            assert recorded["shape"] == list(image.shape)
            assert recorded["spacing_um"] == pytest.approx(image.spacing)
    # the N5 attributes are x, y, z; the plan is z, y, x
    attrs = json.loads((demo_pair / "fixed.n5" / "highres" / "attributes.json").read_text())
    assert plan["images"]["fixed"]["highres"]["shape"] == attrs["dimensions"][::-1]
    grid = pd.read_csv(results / "plan" / "grid_keypoints_moving.tsv", sep="\t")
    lowres = open_image(demo_pair / "moving.n5", "lowres")
    blocksize, halo = config["global_affine"]["blocksize"], 10  # 2 * max_radius
    expected = tile_grid(lowres.shape, blocksize, (halo,) * 3)
    assert len(expected) > 1
    assert list(grid["tile"]) == [tile.id for tile in expected]
    assert plan["grids"]["keypoints_moving"] == len(expected)
    assert plan["provenance"]["config"]["global_affine"]["blocksize"] == blocksize
    assert plan["provenance"]["versions"]["bigstream-workflow"]


def test_each_stage_brings_the_images_closer(finished_run, demo_pair):
    _, config, _ = finished_run
    results = Path(config["output_dir"])
    truth = GroundTruth.from_json(demo_pair / "truth.json")
    fixed = open_image(demo_pair / "fixed.n5", "highres")
    moving = open_image(demo_pair / "moving.n5", "highres")
    points = foreground_points(fixed, truth, moving)
    affine = read_affine(results / "global" / "affine.txt")
    full = chain(affine_map(affine), read_field(results / "local" / "field.json"))
    displacement = open_field(results / "transform" / "field.zarr")
    stages = (("none", lambda p: p), ("global", affine_map(affine)), ("local", full),
              ("deform", chain(full, displacement)))  # fmt: skip
    distances = {
        name: np.linalg.norm(transform(points) - truth(points), axis=1)
        for name, transform in stages
    }
    error = {name: values.mean() for name, values in distances.items()}
    low_res_voxel = 2 * float(np.mean(fixed.spacing))
    assert error["none"] > 2 * low_res_voxel  # the pair starts apart
    assert error["global"] < 0.6 * low_res_voxel
    assert error["local"] < 0.5 * error["global"]
    assert error["deform"] < 0.6 * error["local"]
    rms_voxels = np.sqrt(np.mean(distances["deform"] ** 2)) / float(np.mean(fixed.spacing))
    assert rms_voxels < 0.5
    # the run's own accuracy report agrees with this independent computation
    accuracy = json.loads((results / "qc" / "accuracy.json").read_text())
    assert [s["transform"] for s in accuracy["stages"]][1:] == [
        "global affine", "global affine + local affines",
        "global affine + local affines + deformation"]  # fmt: skip
    assert accuracy["mean_um"] == pytest.approx(error["deform"], rel=1e-6)
    ncc = [stage["ncc_fg"] for stage in accuracy["stages"]]
    assert ncc[0] < ncc[1] < ncc[2] < ncc[3]
    # ... and its NCC (summed by evaluate_accuracy itself: this level makes one batch, so no
    # NCC job) is foreground_ncc over the low-res images, through the same transform files
    assert not (results / "benchmarks" / "accuracy_ncc_block").exists()
    low = [open_image(demo_pair / f"{role}.n5", "lowres") for role in ("fixed", "moving")]
    files = [str(results / name) for name in ("global/affine.txt", "local/field.json",
                                              "transform/field.json")]  # fmt: skip
    direct = [foreground_ncc(*low, lambda p: p)]
    direct += [foreground_ncc(*low, from_inputs(files[:count])[0]) for count in (1, 2, 3)]
    print("NCC per stage: run", ncc, "direct", direct)
    assert ncc == pytest.approx(direct, rel=1e-9)
    # the low-res views (one job each: this level is one batch) are the moving low-res image
    # through the global, then the local affines, on the fixed low-res grid
    assert not (results / "benchmarks" / "lowres_view_block").exists()
    for view, count in (("global", 1), ("local", 2)):
        image = open_image(results / view / "moving_lowres_aligned.ome.zarr")
        moved = resample(
            low[1], from_inputs(files[:count])[0], low[0].shape, low[0].spacing, low[0].origin
        )
        assert image.spacing == low[0].spacing
        assert np.array_equal(image.read((slice(None),) * 3), moved.compute())
    xyz = read_affine(results / "global" / "affine_xyz.txt")
    assert np.allclose(apply_affine(xyz, points[:, ::-1])[:, ::-1], apply_affine(affine, points))
    report = json.loads((results / "global" / "report.json").read_text())
    assert report["status"] == "ok" and report["inliers"] >= 50
    local = pd.read_csv(results / "local" / "report.tsv", sep="\t", keep_default_na=False)
    assert len(local) == np.prod(np.load(results / "local" / "affines.npy").shape[:3])
    # the fitted field folds nowhere: positive Jacobian determinant on a fine grid
    field = read_field(results / "local" / "field.json")
    grid = grid_points(fixed, 30)
    h = 0.05
    columns = [(field(grid + h * e) - field(grid - h * e)) / (2 * h) for e in np.eye(3)]
    assert np.linalg.det(np.stack(columns, axis=2)).min() > 0
    # the field is stored on every 2nd voxel (the deformation's finest level), its grid recorded
    assert displacement.array.shape == (*(-(-n // 2) for n in fixed.shape), 3)
    assert displacement.shrink == displacement.array.attrs["shrink"] == 2
    assert displacement.spacing == pytest.approx(2 * np.asarray(fixed.spacing))
    assert displacement.origin == pytest.approx(fixed.origin)
    # ... and neither does the stitched displacement field, at any of its nodes
    determinant = jacobian_determinant(displacement.array[...], displacement.spacing)
    assert determinant.min() > 0
    record = json.loads((results / "transform" / "field.json").read_text())
    assert record["folded_voxels"] == 0
    assert record["jacobian_min"] == pytest.approx(determinant.min(), rel=0.05)
    deform = pd.read_csv(results / "deform" / "report.tsv", sep="\t")
    assert len(deform) == len(list((results / "transform" / "field_regions").glob("*.json")))
    assert (deform["ncc_after"] >= deform["ncc_before"]).all()


def test_points_are_carried_both_ways(finished_run, demo_pair):
    work, config, _ = finished_run
    results = Path(config["output_dir"])
    truth = GroundTruth.from_json(demo_pair / "truth.json")
    voxel = float(np.mean(open_image(demo_pair / "fixed.n5", "highres").spacing))
    cells = pd.read_parquet(work / "cells.parquet")
    in_moving = pd.read_parquet(results / "points" / "cells_in_moving.parquet")
    assert list(in_moving.columns) == list(cells.columns) and list(in_moving["id"]) == list(
        cells["id"]
    )
    xyz = ["z", "y", "x"]
    error = np.linalg.norm(in_moving[xyz].to_numpy() - truth(cells[xyz].to_numpy()), axis=1)
    assert error.mean() < 0.25 * voxel
    in_fixed = pd.read_csv(results / "points" / "spots_in_fixed.csv")
    assert list(in_fixed.columns) == ["id", "z", "y", "x"]
    error = np.linalg.norm(in_fixed[xyz].to_numpy() - cells[xyz].to_numpy(), axis=1)
    assert error.mean() < 0.25 * voxel
    # the inverse's own health check, in its record and in the QC's table
    inverse = json.loads((results / "transform" / "inverse_field.json").read_text())
    # (the demo: ~0.0005 um on average, under a tenth of a voxel at worst)
    assert 0 <= inverse["round_trip_mean_um"] < 0.005 * voxel
    assert inverse["round_trip_mean_um"] <= inverse["round_trip_max_um"] < 0.1 * voxel
    metrics = pd.read_csv(results / "qc" / "metrics.tsv", sep="\t").set_index("stage")
    shown = metrics["inverse_round_trip_max_um"].dropna().tolist()
    assert shown == [pytest.approx(inverse["round_trip_max_um"])]


def test_aligned_ome_zarr_is_the_moving_image_on_the_fixed_grid(finished_run, demo_pair):
    _, config, result = finished_run
    results = Path(config["output_dir"])
    store = results / "aligned.ome.zarr"
    OmeImage.from_zarr(zarr.open_group(store, mode="r"))  # valid OME-NGFF 0.4
    aligned = open_image(store)
    fixed = open_image(demo_pair / "fixed.n5", "highres")
    moving = open_image(demo_pair / "moving.n5", "highres")
    assert aligned.shape == fixed.shape and aligned.dtype == moving.dtype
    assert aligned.spacing == pytest.approx(fixed.spacing)
    # the moving image pulled through the TRUE transform is what the result should look like
    truth = GroundTruth.from_json(demo_pair / "truth.json")
    ideal = resample(moving, truth, fixed.shape, fixed.spacing, fixed.origin).compute()
    data = aligned.read(WHOLE).astype(float)
    inside = (data > 0) & (ideal > 0)
    assert np.corrcoef(data[inside], ideal[inside].astype(float))[0, 1] > 0.97
    # every block manifest describes exactly what is in the store
    complete = json.loads((results / "aligned" / "complete.json").read_text())
    level = zarr.open_array(store, path="0", mode="r")
    assert level.shape == (1, *fixed.shape) and complete["channels"] == ["moving"]
    for block in complete["blocks"]:
        region = (slice(None), *(slice(*bounds) for bounds in block["core"]))
        digest = hashlib.sha256(np.ascontiguousarray(level[region]).tobytes()).hexdigest()
        assert digest == block["sha256"], block["tile"]
    # the pyramid, made by one job per block of each level: each level the 2x mean of the last
    below = level[0]
    for number in range(1, complete["levels"]):
        even = np.pad(below, [(0, n % 2) for n in below.shape], mode="edge").astype(float)
        expected = np.round(
            even.reshape(even.shape[0] // 2, 2, even.shape[1] // 2, 2, even.shape[2] // 2, 2).mean(
                axis=(1, 3, 5)
            )
        )
        below = zarr.open_array(store, path=str(number), mode="r")[0]
        np.testing.assert_array_equal(below, expected.astype(below.dtype), err_msg=str(number))
    # the run's summary, as a file (a deployment, as here, does not print it)
    summary = (results / "summary.txt").read_text()
    assert "TRE mean" in summary and str(results) in summary and "inverse-consistency" in summary
    # provenance: versions, the full config, and the inputs as they were read
    record = zarr.open_group(store, mode="r").attrs["bigstream"]
    assert record["versions"]["snakemake"] and record["config"]["resample"]["order"] == 1
    assert record["inputs"]["moving"]["highres"]["shape"] == list(moving.shape)
    assert record["inputs"]["fixed"]["lowres"]["spacing_um"] == list(
        open_image(demo_pair / "fixed.n5", "lowres").spacing
    )


def test_an_exported_itk_field_applied_with_simpleitk_lands_where_the_run_did(
    finished_run, demo_pair, tmp_path
):
    """The run's transform exported as an ITK field (``export_transform``, its default grid:
    the deformation's) and applied with SimpleITK to the demo pair: ITK's transform maps
    fixed points within 0.1 voxel of our own, and ``sitk.Resample`` of the moving image
    through it gives the run's ``aligned.ome.zarr`` back, up to the run's own rounding to
    uint16 (0.25 counts on average) and its transform computed every 2nd voxel
    (``resample.transform_step``): measured 0.0001 voxel apart on average, 0.005 at most,
    and 0.3 counts on average, 14 at most, of a range of 6786, where both are non-zero (the
    voxels that map outside the moving image are 0 in both)."""
    sitk = pytest.importorskip("SimpleITK")
    _, config, _ = finished_run
    results = Path(config["output_dir"])
    target = tmp_path / "transform.nrrd"
    assert "deformation as D(x)" in export(str(results), str(target))
    transform = sitk.DisplacementFieldTransform(
        sitk.Cast(sitk.ReadImage(str(target)), sitk.sitkVectorFloat64)
    )
    fixed = open_image(demo_pair / "fixed.n5", "highres")
    extent = (np.asarray(fixed.shape) - 1) * np.asarray(fixed.spacing)
    points = fixed.origin + np.random.default_rng(0).random((2000, 3)) * extent
    ours, _ = load_transform(run_files(str(results)))
    by_itk = np.array([transform.TransformPoint(p[::-1].tolist())[::-1] for p in points])
    error = np.abs(by_itk - ours(points)) / np.asarray(fixed.spacing)
    print(f"ITK vs ours at {len(points)} points, voxels: mean {error.mean():.5f}, "
          f"max {error.max():.5f}")  # fmt: skip
    assert error.max() < 0.1
    moving = open_image(demo_pair / "moving.n5", "highres")
    image = sitk.GetImageFromArray(moving.read(WHOLE).astype(np.float32))
    image.SetSpacing(moving.spacing[::-1])
    image.SetOrigin(moving.origin[::-1])
    resampled = sitk.GetArrayFromImage(sitk.Resample(
        image, fixed.shape[::-1], transform, sitk.sitkLinear, fixed.origin[::-1],
        fixed.spacing[::-1], (1, 0, 0, 0, 1, 0, 0, 0, 1), 0.0, sitk.sitkFloat32,
    ))  # fmt: skip
    aligned = open_image(results / "aligned.ome.zarr").read(WHOLE).astype(np.float32)
    inside = (resampled > 0) & (aligned > 0)
    difference = np.abs(resampled - aligned)[inside]
    value_range = float(aligned.max() - aligned.min())
    print(
        f"|SimpleITK - aligned.ome.zarr| over {inside.mean():.1%} of the voxels: mean "
        f"{difference.mean():.3f}, max {difference.max():.3f} of a range of {value_range:.0f}"
    )
    assert inside.mean() > 0.8
    assert difference.mean() < 1.0
    assert difference.max() < 0.005 * value_range


def colour_separation(png: bytes) -> float:
    """Mean |red - green| over the bright pixels of an overlay figure's panels (red = blue
    there, not the white margin): fixed magenta and moving green apart show colour, aligned
    they turn grey to white."""
    red, green, blue = imread(io.BytesIO(png), format="png")[..., :3].transpose(2, 0, 1)
    panel = (red == blue) & ~((red > 0.99) & (green > 0.99))
    bright = panel & (np.maximum(red, green) > 0.3)
    return float(np.abs(red - green)[bright].mean())


def test_the_qc_report_shows_the_images_come_together(finished_run, tmp_path):
    work, config, _ = finished_run
    report = tmp_path / "report.zip"
    result = run_deployed(work, config, "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    with zipfile.ZipFile(report) as archive:
        files = {Path(name).name: archive.read(name) for name in archive.namelist()}
    overlays = [f"overlay_{i}_{view}.png" for i, view in
                enumerate(["before", "global_affine", "local_affines", "aligned"])]  # fmt: skip
    for name in [*overlays, "checkerboard.png", "tiles.png"]:
        picture = imread(io.BytesIO(files[name]), format="png")
        assert picture[..., :3].std() > 0.05, f"{name} is blank"
    separation = [colour_separation(files[name]) for name in overlays]
    assert separation[0] > 5 * separation[-1]  # before: magenta and green apart
    assert separation[-1] < separation[1] < separation[0]
    metrics = pd.read_csv(io.BytesIO(files["metrics.tsv"]), sep="\t").set_index("stage")
    ncc = metrics["ncc_fg_mid_planes"]
    assert ncc["before"] < ncc["global affine"] < ncc["aligned (all stages)"]
    assert ncc["aligned (all stages)"] > 0.95
    accuracy = json.loads((Path(config["output_dir"]) / "qc" / "accuracy.json").read_text())
    tre = [row["mean_um"] for row in accuracy["stages"]]
    assert metrics["tre_mean_um"].tolist() == pytest.approx(tre, rel=1e-12)
    assert metrics.loc["global affine", "inliers"] > 0
    local = pd.read_csv(Path(config["output_dir"]) / "local" / "report.tsv", sep="\t")
    assert local["decision"].notna().all()  # every tile, fitted or filled, was judged
    kept = local["decision"].str.startswith("global").mean()
    assert metrics.loc["local affines", "kept_global_share"] == pytest.approx(kept)
    assert ncc["local affines"] >= ncc["global affine"]
    provenance = yaml.safe_load(files["provenance.yaml"])
    assert provenance["versions"]["snakemake"] and provenance["config"]["deform"]["blocksize"]
    highres = provenance["inputs"]["fixed"]["highres"]
    assert highres["shape"] == list(open_image(config["fixed"]["path"], "highres").shape)


def test_rerun_does_nothing(finished_run):
    work, config, _ = finished_run
    result = run_deployed(work, config)
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr
    # our own Snakefile (the README's way) on the same results: the same rules, so nothing
    # to redo but the lost summary, which such a run also prints when it ends
    (Path(config["output_dir"]) / "summary.txt").unlink()
    result = run_snakemake(work, config)
    assert result.returncode == 0, result.stderr[-3000:]
    ran = set(re.findall(r"^(?:local)?rule (\w+):", result.stdout + result.stderr, re.M))
    assert ran == {"summarise_run", "all"}
    assert "TRE mean" in result.stdout


def test_lost_blocks_are_redone_alone_and_the_result_is_the_same(finished_run):
    work, config, _ = finished_run
    results = Path(config["output_dir"])
    level = zarr.open_array(results / "aligned.ome.zarr", path="0", mode="r+")
    before = [digest(results / "aligned.ome.zarr", path) for path in ("0", "1")]
    # a run killed during resampling: two blocks had written garbage into their chunks but
    # not their manifests, and the jobs after them (finalize, the summary) never ran
    lost = sorted((results / "aligned" / "blocks").glob("*.json"))[:2]
    for manifest in lost:
        for block in json.loads(manifest.read_text())["blocks"]:
            level[(slice(None), *(slice(*b) for b in block["core"]))] = 7
        manifest.unlink()
    # the lost blocks redone, then a kill before the pyramid and the metadata: the store
    # holds new level-0 blocks under the old pyramid, and must not look finished
    redone = run_deployed(work, config, *(str(path) for path in lost))
    assert redone.returncode == 0, redone.stderr[-3000:]
    attrs = zarr.open_group(results / "aligned.ome.zarr", mode="r").attrs.asdict()
    assert "multiscales" not in attrs and "bigstream" in attrs
    assert not (results / "aligned" / "complete.json").exists()
    with pytest.raises(ImageError, match="without OME-Zarr `multiscales`"):
        open_image(results / "aligned.ome.zarr")
    for manifest in lost:  # the kill came while they ran: their records are gone
        manifest.unlink()
    result = run_deployed(work, config)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert log.count("rule resample_block:") == 2 and "rule finalize_aligned:" in log
    assert "rule downsample_aligned:" in log  # the pyramid's blocks above the lost ones
    assert "rule fit_local_affine:" not in log and "rule detect_keypoints:" not in log
    assert [digest(results / "aligned.ome.zarr", path) for path in ("0", "1")] == before


def test_blocks_batched_per_job_give_the_same_bytes_with_fewer_jobs(finished_run, tmp_path):
    """`blocks_per_job` only changes how blocks are bundled into jobs: the field, its
    inverse and the result are the same bytes as one block per job, and the per-block
    reports the same blocks."""
    _, config, _ = finished_run
    once, batched = Path(config["output_dir"]), tmp_path / "results"  # one block per job, batched
    config = {**config, "output_dir": str(batched),
              "deform": {**config["deform"], "blocks_per_job": [1, 2, 2]},
              "resample": {**config["resample"], "blocks_per_job": [2, 2, 2]}}  # fmt: skip
    result = run_snakemake(tmp_path, config, *start_at_the_deformation(once, batched))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("transform/field.zarr", "transform/inverse_field.zarr"):
        assert digest(batched / name) == digest(once / name), name
    assert digest(batched / "aligned.ome.zarr", "0") == digest(once / "aligned.ome.zarr", "0")
    blocks = {run: len(list((run / "deform" / "blocks").glob("*/*.npy")))
              for run in (once, batched)}  # fmt: skip
    assert blocks[batched] == blocks[once] > 1
    jobs = {run: {rule: len(list((run / "benchmarks" / rule).rglob("*.tsv")))
                  for rule in ("deform_block", "stitch_field", "invert_field", "resample_block")}
            for run in (once, batched)}  # fmt: skip
    for rule, count in jobs[batched].items():
        assert 0 < count < jobs[once][rule], (rule, jobs)
    reports = [pd.read_csv(run / "deform" / "report.tsv", sep="\t")
               for run in (once, batched)]  # fmt: skip
    columns = ["tile", "ncc_before", "ncc_after"]
    pd.testing.assert_frame_equal(reports[0][columns], reports[1][columns])


def test_a_field_stored_at_every_voxel_gives_the_same_transform(finished_run, tmp_path):
    """`deform.field_shrink: 1` stores the field at every voxel (8x the nodes) from the same
    blocks (the finished run's, copied), which give the same transform at every voxel as
    the default's every 2nd voxel, the same inverse and the same aligned image."""
    _, config, _ = finished_run
    coarse, full = Path(config["output_dir"]), tmp_path / "results"
    config = {**config, "output_dir": str(full),
              "deform": {**config["deform"], "field_shrink": 1}}  # fmt: skip
    targets = start_at_the_deformation(coarse, full)
    shutil.copytree(coarse / "deform", full / "deform")  # the blocks, as they stand
    result = run_snakemake(tmp_path, config, *targets)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "rule stitch_field:" in log and "rule deform_block:" not in log
    fixed = open_image(config["fixed"]["path"], "highres")
    stored = zarr.open_array(full / "transform" / "field.zarr", mode="r")
    assert stored.shape == (*fixed.shape, 3) and stored.attrs["shrink"] == 1
    assert stored.attrs["spacing_um"] == pytest.approx(fixed.spacing)
    points = voxel_centres(
        tuple(slice(0, n) for n in fixed.shape), fixed.spacing, fixed.origin
    )  # every voxel
    for name, bound in (("field", 0.01), ("inverse_field", 0.2)):
        maps = [open_field(run / "transform" / f"{name}.zarr") for run in (coarse, full)]
        error = np.linalg.norm((maps[0](points) - maps[1](points)) / fixed.spacing, axis=1)
        print(f"{name}: every 2nd voxel vs every voxel: {error.max():.2e} largest, "
              f"{error.mean():.2e} mean voxel")  # fmt: skip
        assert error.max() < bound, (name, error.max())
    aligned = [zarr.open_array(run / "aligned.ome.zarr", path="0", mode="r")[WHOLE].astype(float)
               for run in (coarse, full)]  # fmt: skip
    assert np.abs(aligned[0] - aligned[1]).mean() < 0.01 * np.abs(aligned[1]).mean()


def test_failed_affine_with_on_failure_identity_goes_on(tiny_pair, tmp_path):
    config = pair_config(tiny_pair, tmp_path / "results")
    config["global_affine"] = {"on_failure": "identity"}
    config["local_affine"] = {"enabled": False}
    result = run_snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "results" / "global" / "report.json").read_text())
    assert report["status"] == "failed, identity used"
    assert "key points" in report["error"] or "matches" in report["error"]
    assert np.allclose(read_affine(tmp_path / "results" / "global" / "affine.txt"), np.eye(4))
    assert (tmp_path / "results" / "aligned" / "complete.json").exists()


def test_failed_affine_stops_the_run_with_the_reason(tiny_pair, tmp_path):
    config = pair_config(tiny_pair, tmp_path / "results")
    result = run_snakemake(tmp_path, config)
    assert result.returncode != 0
    assert "GlobalAffineError" in result.stdout + result.stderr
    assert not (tmp_path / "results" / "global" / "affine.txt").exists()
