"""Rounds and sweeps: several registrations in one run, shared stages computed once, the
summary table; other channels resampled with their round's transform."""

from __future__ import annotations

import copy
import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr
from ome_zarr_models.v05 import Image as OmeImageV05

from bigstream_core.io import open_image, write_n5
from bigstream_core.phantom import preset, write_pair
from bigstream_workflow.config import ConfigError, load_yaml, merge_config
from bigstream_workflow.layout import RULES, benchmark_file, result_prefixes, stage_keys
from bigstream_workflow.sets import expand_sets, read_sweep
from tests.conftest import ROOT, demo_config, pair_config, run_snakemake, write_channels

DEFAULTS = load_yaml(ROOT / "config" / "config.yaml")
WHOLE = (slice(None),) * 3
# The runs below test sets, rounds and channels on 80 x 160 x 160 'small' pairs, in fewer and
# larger tiles than the demo's (the tiling itself is tested in tests/test_workflow.py): key
# points in one tile per image (the low-res levels are 40 x 80 x 80 and 41 x 86 x 75 voxels)
# instead of 8 each, the deformation in two blocks (z halves) instead of 8, the resampling in
# one block instead of 18 (two in the rounds, to add them up). On the demo pair the mean TRE
# after the global affine, the local affines and the deformation is 0.624, 0.256 and 0.078
# µm with these tiles, 0.624, 0.266 and 0.078 with the demo's: the bounds below, from the
# truth, mean the same with either.
FEWER_TILES = {
    "global_affine": {"blocksize": [48, 96, 96]},
    "deform": {"blocksize": [40, 160, 160]},
    "resample": {"blocksize": [80, 160, 160]},
}


def with_fewer_tiles(config: dict) -> dict:
    """``config`` (with the demo's stage parameters) in the tiles of FEWER_TILES."""
    for stage, values in FEWER_TILES.items():
        config[stage] = {**config[stage], **values}
    return config


def write_sweep(path: Path, rows: list[list], columns: list[str]) -> Path:
    path.write_text("\n".join("\t".join(map(str, row)) for row in [columns, *rows]) + "\n")
    return path


def merged(user: dict) -> dict:
    return merge_config(copy.deepcopy(DEFAULTS), user)


def test_sweep_rows_become_sets_and_only_what_differs_is_computed_again(tmp_path):
    table = write_sweep(
        tmp_path / "sweep.tsv",
        [[0.7, "[10, 5]"], [0.7, "[0,0]"], [0.5, "[10, 5]"]],
        ["global_affine.match_threshold", "deform.iterations"],
    )
    config = merged({"fixed": {"path": "f.n5"}, "moving": {"path": "m.n5"},
                     "output_dir": str(tmp_path / "out"), "sweep": str(table)})  # fmt: skip
    first, second, third = expand_sets(config, DEFAULTS)
    assert first.name == "sweep/global_affine.match_threshold~0.7_deform.iterations~[10,5]"
    assert first.config["deform"]["iterations"] == [10, 5]
    assert third.config["global_affine"]["match_threshold"] == 0.5
    assert first.config["set"]["reuse"] == {}
    # only the deformation differs: everything before it comes from the first set
    assert set(second.config["set"]["reuse"]) == {
        "masks/fixed.npy", "masks/moving.npy", "global/keypoints/fixed",
        "global/keypoints/moving", "global", "local",
    }  # fmt: skip
    assert set(second.config["set"]["reuse"].values()) == {first.folder}
    # matching differs: key points (and masks) are shared, the affine and after are not
    assert set(third.config["set"]["reuse"]) == {
        "masks/fixed.npy", "masks/moving.npy", "global/keypoints/fixed", "global/keypoints/moving"
    }  # fmt: skip


def test_rounds_share_the_fixed_image_work_and_take_their_own_truth(tmp_path):
    config = merged({
        "fixed": {"path": "f.n5"}, "moving": {"highres": "s0", "lowres": "s2"},
        "output_dir": str(tmp_path), "ground_truth": "top.json",
        "rounds": [{"name": "r1", "path": "r1.n5"},
                   {"name": "r2", "path": "r2.n5", "ground_truth": "r2.json"}],
    })  # fmt: skip
    r1, r2 = expand_sets(config, DEFAULTS)
    assert (r1.name, r2.name) == ("rounds/r1", "rounds/r2")
    assert r2.config["moving"] == {**DEFAULTS["moving"], "path": "r2.n5", "highres": "s0",
                                   "lowres": "s2"}  # fmt: skip
    assert (r1.config["ground_truth"], r2.config["ground_truth"]) == ("top.json", "r2.json")
    assert r2.config["set"]["reuse"] == {
        "masks/fixed.npy": r1.folder,
        "global/keypoints/fixed": r1.folder,
    }


def test_every_result_the_layout_names_has_a_reuse_key_and_no_other():
    """The reuse keys and the layout table name the same results: a result without a key
    would never be shared, a key without a rule would share nothing real."""
    config = merged({"fixed": {"path": "f.n5"}, "output_dir": "out",
                     "moving": {"path": "m.n5", "channels": [{"name": "c1"}]}})  # fmt: skip
    keys = stage_keys(config)
    assert result_prefixes() == {key for key in keys if not key.endswith(".ome.zarr")}
    assert "aligned.ome.zarr" in keys
    changed = merged({**config, "moving": {**config["moving"], "channels": [{"name": "c2"}]}})
    assert stage_keys(changed)["aligned"] != keys["aligned"]  # the channels are in one store
    assert stage_keys(changed)["transform"] == keys["transform"]
    assert benchmark_file("detect_keypoints", image="fixed") == "detect_keypoints/fixed/{tile}.tsv"
    assert all(layout.benchmark.endswith(".tsv") for layout in RULES.values())


@pytest.mark.parametrize(
    ("rows", "columns", "expected"),
    [
        ([[0.7]], ["global_affine.match_treshold"], "column 'global_affine.match_treshold' is not"),
        ([[0.7]], ["deform"], "column 'deform' names a whole section"),
        ([["x.n5"]], ["moving.path"], "column 'moving.path' is not a stage parameter"),
        ([], ["deform.iterations"], "no parameter set"),
        ([[0.7], [0.7]], ["global_affine.match_threshold"], "appear twice"),
    ],
)
def test_a_bad_sweep_table_is_named_with_the_column(tmp_path, rows, columns, expected):
    table = write_sweep(tmp_path / "sweep.tsv", rows, columns)
    with pytest.raises(ConfigError, match="sweep") as error:
        read_sweep(table, DEFAULTS)
    assert expected in str(error.value) and str(table) in str(error.value)


def test_a_missing_sweep_table_or_a_repeated_round_stops_before_any_job(deformed_pair, tmp_path):
    config = pair_config(deformed_pair, tmp_path / "out", sweep=str(tmp_path / "nope.tsv"))
    result = run_snakemake(tmp_path, config, "--dry-run")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "nope.tsv" in output and "cannot read the table" in output
    moving = {"path": str(deformed_pair / "moving.n5")}
    rounds = [{"name": "r1", **moving}, {"name": "r1", **moving}]
    result = run_snakemake(tmp_path, pair_config(deformed_pair, tmp_path / "out", rounds=rounds),
                           "--dry-run")  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "`rounds` names ['r1'] more than once" in output
    assert not (tmp_path / "out").exists()


def test_a_channel_on_another_grid_is_refused_with_its_name(deformed_pair, tmp_path):
    moving = open_image(deformed_pair / "moving.n5", "highres")
    write_n5(np.zeros((10, 20, 30), moving.dtype), tmp_path / "other.n5", "c1", (1.0, 1.0, 1.0))
    config = pair_config(deformed_pair, tmp_path / "out")
    config["moving"]["channels"] = [{"name": "dapi", "path": str(tmp_path / "other.n5"),
                                     "highres": "c1"}]  # fmt: skip
    result = run_snakemake(tmp_path, config, "--dry-run")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "`moving.channels[0] ('dapi')`" in output
    assert "(10, 20, 30) voxels" in output and "expected the moving high-res grid" in output


def test_the_cluster_profile_bundles_every_sets_tiles(tiny_pair, tmp_path):
    """A set's tile rules are copies (set1_deform_block); the profile's `groups`, which name
    the original rules, must bundle them too, or a sweep would submit one job per tile."""
    table = write_sweep(tmp_path / "sweep.tsv", [[0.6], [0.7]], ["global_affine.match_threshold"])
    config = pair_config(tiny_pair, tmp_path / "out", sweep=str(table))
    result = run_snakemake(tmp_path, config, "--dry-run", profile="slurm")
    assert result.returncode == 0, result.stderr[-3000:]
    grouped = [line.strip() for line in result.stdout.splitlines() if line.startswith("    rule ")]
    assert "rule set0_detect_keypoints:" in grouped  # shared: the first set computes them
    for index in (0, 1):
        for name in ("fit_local_affine", "deform_block", "resample_block"):
            assert f"rule set{index}_{name}:" in grouped, (index, name)
    assert "    rule set0_plan:" not in result.stdout  # the other rules stay on their own


@pytest.mark.slow
def test_a_three_set_sweep_ranks_the_sensible_parameters_first(deformed_pair, tmp_path):
    """Three sets on the demo pair: all stages (the sensible set), no deformation, and only a
    global affine from other matching parameters. Against the known transform the sensible
    set must win, the summary must carry each set's metrics and costs, and the stages the
    sets share must have run once."""
    columns = ["global_affine.match_threshold", "local_affine.enabled", "deform.enabled"]
    table = write_sweep(tmp_path / "sweep.tsv",
                        [[0.6, "false", "false"], [0.7, "true", "false"], [0.7, "true", "true"]],
                        columns)  # fmt: skip
    out = tmp_path / "results"
    config = with_fewer_tiles(pair_config(deformed_pair, out, **demo_config(), sweep=str(table)))
    result = run_snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = pd.read_csv(out / "sweep" / "summary.tsv", sep="\t")
    assert len(summary) == 3 and (out / "sweep" / "summary.png").stat().st_size > 10_000
    best, middle, worst = summary.to_dict("records")
    assert [best["rank"], middle["rank"], worst["rank"]] == [1, 2, 3]
    assert (best["local_affine.enabled"], best["deform.enabled"]) == (True, True)
    assert (middle["local_affine.enabled"], middle["deform.enabled"]) == (True, False)
    # the table's accuracy is each set's own, against the truth
    for row in (best, middle, worst):
        accuracy = json.loads((out / row["set"] / "qc" / "accuracy.json").read_text())
        final = accuracy["stages"][-1]["mean_um"]
        assert row["tre_aligned_um"] == pytest.approx(final, rel=1e-9)
        assert row["tre_aligned_um"] < row["tre_before_um"] / 5
    assert best["tre_aligned_um"] < 0.5 * middle["tre_aligned_um"] < worst["tre_aligned_um"]
    assert best["ncc_fg_aligned"] > best["ncc_fg_before"] and best["jacobian_min"] > 0
    for column in ("inliers", "residual_median_um", "global_affine_s", "global_affine_peak_mb",
                   "resample_s", "resample_peak_mb"):  # fmt: skip
        assert summary[column].notna().all(), column
    assert summary["failed_share"].notna().sum() == 2  # two sets fitted local affines
    assert summary["deform_s"].notna().sum() == 1  # one set deformed
    # shared stages ran once: key points in one folder only, the affine stages in two
    sets = {row["set"]: out / row["set"] for row in (best, middle, worst)}
    ran = {name: {rule for rule in ("detect_keypoints", "match_keypoints.tsv", "fit_local_affine",
                                    "deform_block") if (folder / "benchmarks" / rule).exists()}
           for name, folder in sets.items()}  # fmt: skip
    assert sum("detect_keypoints" in rules for rules in ran.values()) == 1
    assert sum("match_keypoints.tsv" in rules for rules in ran.values()) == 2
    assert sum("fit_local_affine" in rules for rules in ran.values()) == 1
    assert "deform" in middle["reused"] or "local" in middle["reused"]
    assert (
        middle["global_affine_s"] == best["global_affine_s"]
    )  # the same jobs, counted where they ran
    # the report holds the summary and each set's QC, filed under the set's name
    result = run_snakemake(tmp_path, config, "--report", str(tmp_path / "report.zip"))
    assert result.returncode == 0, result.stderr[-3000:]
    with zipfile.ZipFile(tmp_path / "report.zip") as archive:
        names = archive.namelist()
        html = archive.read(next(n for n in names if n.endswith("report.html"))).decode()
    assert any(name.endswith("summary.png") for name in names)
    for row in (best, middle, worst):
        assert f'"{row["set"]}": ["{out / row["set"] / "qc"}' in html, row["set"]


@pytest.mark.slow
def test_two_rounds_with_three_channels_each_into_one_multichannel_ome_zarr_0_5(tmp_path):
    """Two moving rounds of one fixed image (other rotations and shifts), each a 3-channel
    OME-Zarr (axes c, z, y, x) whose other channels are the first doubled and tripled; the
    fixed image a 2-channel one, registered on its second channel: each round is registered
    to the fixed image with its own transform, and its other channels are resampled with
    that transform into one OME-Zarr 0.5 (sharded) along c, labelled, valid NGFF."""
    spec = preset("small")
    rounds = {"r1": spec, "r2": dataclasses.replace(spec, rotation_deg=(-3.0, 2.5, 4.0),
                                                    shift_um=(-4.0, 6.0, -8.0))}  # fmt: skip
    for name, round_spec in rounds.items():
        write_pair(tmp_path / name, round_spec, ome_zarr=False)
        write_channels(tmp_path / name / "moving.n5", tmp_path / name / "moving.ome.zarr",
                       {"x3": 3, "reg": 1, "x2": 2})  # fmt: skip
    assert (open_image(tmp_path / "r1" / "fixed.n5", "highres").read(WHOLE)
            == open_image(tmp_path / "r2" / "fixed.n5", "highres").read(WHOLE)).all()  # fmt: skip
    write_channels(tmp_path / "r1" / "fixed.n5", tmp_path / "fixed.ome.zarr",
                   {"empty": 0, "tissue": 1})  # fmt: skip
    out = tmp_path / "results"
    config = with_fewer_tiles(pair_config(tmp_path / "r1", out, **demo_config()))
    config["fixed"] = {"path": str(tmp_path / "fixed.ome.zarr"), "lowres": "1", "highres": "0",
                       "channel": "tissue"}  # fmt: skip
    config["deform"] = {**config["deform"], "enabled": False}  # the affine stages suffice here
    # no deformation in these pairs: local tiles of 20 x 80 x 80 (2 per round, not 8) suffice
    # (mean TRE after them 0.011-0.012 µm, as with the demo's 8)
    config["resample"] = {**config["resample"], "blocksize": [40, 160, 160]}  # z halves
    config["local_affine"] = {**config["local_affine"], "blocksize": [20, 80, 80]}
    config["output"] = {"format": "ome-zarr-0.5", "shard": True}
    config["moving"] = {"lowres": "1", "highres": "0", "channel": "reg",
                        "channels": [{"name": "double", "channel": "x2"},
                                     {"name": "triple", "channel": 0}]}  # fmt: skip
    config["rounds"] = [
        {"name": name, "path": str(tmp_path / name / "moving.ome.zarr"),
         "ground_truth": str(tmp_path / name / "truth.json")}
        for name in rounds
    ]  # fmt: skip
    result = run_snakemake(tmp_path, config)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = pd.read_csv(out / "rounds" / "summary.tsv", sep="\t")
    assert sorted(summary["round"]) == ["r1", "r2"]
    aligned = {}
    for name in rounds:
        folder = out / "rounds" / name
        accuracy = json.loads((folder / "qc" / "accuracy.json").read_text())["stages"]
        assert accuracy[-1]["mean_um"] < 0.5 < accuracy[0]["mean_um"], accuracy
        store = folder / "aligned.ome.zarr"
        group = zarr.open_group(store, mode="r")
        OmeImageV05.from_zarr(group)  # valid OME-NGFF 0.5
        assert group["0"].shards == (1, 40, 160, 160)  # one file per resample block
        labels = [c["label"] for c in group.attrs["ome"]["omero"]["channels"]]
        assert labels == ["reg", "double", "triple"]
        registration, double, triple = (
            open_image(store, "0", channel=label).read(WHOLE).astype(int) for label in labels
        )
        assert registration.max() > 150  # the tissue is there
        assert np.abs(double - 2 * registration).max() <= 1  # the same transform, voxel by voxel
        assert np.abs(triple - 3 * registration).max() <= 2  # |round(3v) - 3 round(v)| <= 1.5
        aligned[name] = registration
        # the summary's resample cost: the blocks' jobs, every channel in each
        jobs = list((folder / "benchmarks" / "resample_block").glob("*.tsv"))
        seconds = sum(pd.read_csv(path, sep="\t")["s"].sum() for path in jobs)
        row = summary.set_index("round").loc[name]
        assert len(jobs) == 2 and row["resample_s"] == pytest.approx(seconds, abs=0.01)
    # the rounds' own transforms: both land on the fixed image, by different routes
    assert not (out / "rounds" / "r2" / "benchmarks" / "detect_keypoints" / "fixed").exists()
    assert (out / "rounds" / "r2" / "benchmarks" / "detect_keypoints" / "moving").exists()
    fixed = open_image(tmp_path / "r1" / "fixed.n5", "highres").read(WHOLE).astype(float)
    tissue = fixed > 150
    for registration in aligned.values():
        assert np.corrcoef(fixed[tissue], registration[tissue])[0, 1] > 0.8
