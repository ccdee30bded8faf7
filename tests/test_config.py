"""Config checks: the schema, cross-field rules and the images a config names.

Bad configs must stop with a message naming the key or file, the value and what
was expected, both from Python and through a real Snakemake run (before any job).
"""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import yaml
import zarr

from bigstream_core.io import open_image
from bigstream_workflow.config import (
    ConfigError,
    checked_config,
    load_yaml,
    merge_config,
    validate_config,
)
from tests.conftest import ROOT, pair_config, run_snakemake, write_channels

SCHEMA_PATH = ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULTS = load_yaml(ROOT / "config" / "config.yaml")


def merged(user: dict) -> dict:
    """What Snakemake does: the user's file merged onto config/config.yaml."""
    return merge_config(copy.deepcopy(DEFAULTS), user)


def test_defaults_document_every_schema_key_and_nothing_else():
    schema = load_yaml(SCHEMA_PATH)
    text = (ROOT / "config" / "config.yaml").read_text()
    for key, sub in schema["properties"].items():
        assert key in DEFAULTS, key
        if "properties" in sub and DEFAULTS[key] is not None:  # `set: null`: filled per set
            assert set(sub["properties"]) == set(DEFAULTS[key]), key
    # every key is documented where it first appears: a comment on its line or just above it
    documented, lines = set(), text.splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"\s*(\w+):", line)
        if match is None:
            continue
        key = match.group(1)
        if "#" in line or lines[number - 1].lstrip().startswith("#"):
            documented.add(key)
        assert key in documented, f"config/config.yaml: `{key}` has no comment saying what it is"


def test_defaults_plus_paths_are_valid(tiny_pair, tmp_path):
    config = merged(pair_config(tiny_pair, tmp_path / "out"))
    images = checked_config(config, SCHEMA_PATH)
    assert len(images["fixed"]["highres"].shape) == 3
    assert images["fixed"]["lowres"].spacing == pytest.approx(
        [2 * s for s in images["fixed"]["highres"].spacing]
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"global_affine": {"foo": 1}}, r"unknown key\(s\) \['foo'\] in `global_affine`"),
        ({"colour": "red"}, r"unknown key\(s\) \['colour'\] at the top level"),
        (
            {"global_affine": {"nspots": "many"}},
            r"`global_affine.nspots` = 'many': expected of type integer",
        ),
        (
            {"deform": {"blocksize": [64, 64]}},
            r"`deform.blocksize` = \[64, 64\]: expected a list of at least 3",
        ),
        ({"fixed": {"path": None}}, r"`fixed.path` is not set"),
        ({"local_affine": {"overlap": 0.9}}, r"`local_affine.overlap` = 0.9: expected <= 0.5"),
        ({"global_affine": {"on_failure": "ignore"}}, r"expected one of \['error', 'identity'\]"),
        ({"global_affine": {"min_radius": 30}}, r"`global_affine.min_radius` = 30 is larger than"),
        (
            {"global_affine": {"blocksize": "big"}},
            r"`global_affine.blocksize` = 'big': expected Voxels \(z, y, x\) per key-point tile, "
            "or auto",
        ),
        (
            {"local_affine": {"max_radius": 20}},
            r"`local_affine.max_radius` is no longer a setting: .* set `global_affine.max_radius`",
        ),
        (
            {"global_affine": {"refine": {"smooth_sigmas": [1.0, 0.5]}}},
            r"`global_affine.refine.smooth_sigmas` is no longer a setting: renamed "
            r"`global_affine.refine.level_sigmas`",
        ),
        ({"deform": {"iterations": [10, 10, 10]}}, r"must have the same length"),
        (
            {"deform": {"cc_radius": [3, 2, 1]}},
            r"and `deform.cc_radius` when a list\) .* 'cc_radius': 3",
        ),
        (
            {"deform": {"field_shrink": 3}},
            r"`deform.field_shrink` = 3 does not divide every `deform.blocksize` entry "
            r"\[256, 256, 256\]: expected a divisor of each",
        ),
        (
            {"deform": {"blocksize": [250, 256, 255]}},
            r"`deform.field_shrink` = null \(the finest level's shrink, 2\) does not divide "
            r"every `deform.blocksize` entry \[250, 256, 255\]",
        ),
        ({"deform": {"field_shrink": 0}}, r"`deform.field_shrink` = 0: expected >= 1"),
        (
            {"deform": {"blocks_per_job": [0, 1, 1]}},
            r"`deform.blocks_per_job` = \[0, 1, 1\]: expected auto \(.*\), or a list of 3 "
            r"integers >= 1",
        ),
        (
            {"resample": {"blocks_per_job": "automatic"}},
            r"`resample.blocks_per_job` = 'automatic': expected auto \(",
        ),
        (
            {"deform": {"gradient": "both"}},
            r"`deform.gradient` = 'both': expected one of \['moving', 'symmetric'\]",
        ),
        (
            {
                "points": [
                    {"path": "a/spots.csv", "space": "moving"},
                    {"path": "b/spots.csv", "space": "fixed"},
                ]
            },  # fmt: skip
            r"`points` lists more than one table named \['spots.csv'\]",
        ),
        ({"points": [{"path": "spots.txt", "space": "moving"}]}, r"`points.0.path` = 'spots.txt'"),
        (
            {"output": {"shard": True}},
            r"`output.shard` = true with `output.format` = 'ome-zarr-0.4': shards are a Zarr v3",
        ),
        (
            {"output": {"format": "ome-zarr-0.6"}},
            r"`output.format` = 'ome-zarr-0.6': expected one of \['ome-zarr-0.4', 'ome-zarr-0.5'\]",
        ),
    ],
)
def test_schema_errors_name_key_value_and_expectation(change, expected):
    config = merged({"fixed": {"path": "f.n5"}, "moving": {"path": "m.n5"}})
    for key, value in change.items():
        if isinstance(value, dict):
            config[key].update(value)
        else:
            config[key] = value
    with pytest.raises(ConfigError, match=expected):
        validate_config(config, load_yaml(SCHEMA_PATH))


def _image_error(tiny_pair, tmp_path, **fixed) -> str:
    config = merged(pair_config(tiny_pair, tmp_path / "out"))
    config["fixed"].update(fixed)
    with pytest.raises(ConfigError) as info:
        checked_config(config, SCHEMA_PATH)
    return str(info.value)


def test_missing_container_is_named(tiny_pair, tmp_path):
    message = _image_error(tiny_pair, tmp_path, path=str(tmp_path / "nope.n5"))
    assert "fixed." in message and "nope.n5" in message


def test_missing_dataset_is_named_with_the_alternatives(tiny_pair, tmp_path):
    message = _image_error(tiny_pair, tmp_path, lowres="lowres2")
    assert "`fixed.lowres`" in message and "lowres2" in message and "highres" in message


def test_a_multichannel_image_needs_its_channel_named_in_the_config(tiny_pair, tmp_path):
    """A c, z, y, x OME-Zarr: `fixed.channel` picks the channel by label or index, on both
    levels; without it the run stops naming the key, the channels and how to choose."""
    store = tmp_path / "fixed.ome.zarr"
    write_channels(tiny_pair / "fixed.n5", store, {"dapi": 0, "tissue": 1})
    levels = {"path": str(store), "lowres": "1", "highres": "0"}
    message = _image_error(tiny_pair, tmp_path, **levels)
    assert "`fixed.highres`" in message
    assert "hold 2 channels; set `channel` to an index 0-1 or a label of ['dapi', 'tissue']" in (
        message
    )
    for channel in ("tissue", 1):
        config = merged(pair_config(tiny_pair, tmp_path / "out"))
        config["fixed"].update(levels, channel=channel)
        images = checked_config(config, SCHEMA_PATH)["fixed"]
        assert images["highres"].lead == images["lowres"].lead == (1,)
        original = open_image(tiny_pair / "fixed.n5", "lowres").read((slice(None),) * 3)
        np.testing.assert_array_equal(images["lowres"].read((slice(None),) * 3), original)
    assert "is not one of the 2 channels" in _image_error(tiny_pair, tmp_path, **levels,
                                                          channel="gfp")  # fmt: skip


def test_2d_and_empty_arrays_are_refused(tiny_pair, tmp_path):
    zarr.create_array(tmp_path / "flat.zarr", shape=(4, 5), dtype="uint16")
    message = _image_error(
        tiny_pair, tmp_path, path=str(tmp_path / "flat.zarr"), highres="", lowres=""
    )
    assert "flat.zarr" in message and "3D" in message
    empty = zarr.create_array(tmp_path / "empty.zarr", shape=(0, 5, 5), dtype="uint16")
    empty.attrs["spacing"] = [1.0, 1.0, 1.0]
    message = _image_error(
        tiny_pair, tmp_path, path=str(tmp_path / "empty.zarr"), highres="", lowres=""
    )
    assert "empty.zarr" in message and "(0, 5, 5)" in message and "empty axis" in message


def test_spacing_override_sets_both_levels(tiny_pair, tmp_path):
    config = merged(pair_config(tiny_pair, tmp_path / "out"))
    config["moving"]["spacing"] = [1.0, 2.0, 3.0]
    images = checked_config(config, SCHEMA_PATH)
    assert images["moving"]["highres"].spacing == pytest.approx((1.0, 2.0, 3.0))
    assert images["moving"]["lowres"].spacing == pytest.approx((2.0, 4.0, 6.0))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"fixed": {"lowres": "nothere"}}, "`fixed.lowres`"),
        ({"deform": {"blocksize": "big"}}, "`deform.blocksize` = 'big': expected of type array"),
    ],
)
def test_bad_config_stops_snakemake_before_any_job(tiny_pair, tmp_path, change, expected):
    config = pair_config(tiny_pair, tmp_path / "out")
    for key, value in change.items():
        config.setdefault(key, {}).update(value)
    result = run_snakemake(tmp_path / "work", config)
    assert result.returncode != 0
    assert expected in result.stderr + result.stdout
    assert not (tmp_path / "out").exists(), "a job ran although the config is bad"


def test_user_config_files_are_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"a": 1}))
    assert load_yaml(path) == {"a": 1}
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(tmp_path / "empty.yaml") == {}
