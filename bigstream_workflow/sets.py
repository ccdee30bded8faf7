"""Several registrations in one run: imaging rounds and parameter sweeps.

A *set* is one registration of one moving image to the fixed image with one
parameter set, in its own results folder under ``output_dir``:

- ``rounds`` (several moving images, e.g. the rounds of a multiplexed experiment):
  ``rounds/<name>/``; each round's entry is laid over ``moving`` (so ``moving`` holds
  what the rounds share: dataset names, spacing) and may list ``channels``;
- ``sweep`` (a TSV, one column per dotted parameter such as ``deform.iterations``,
  one row per parameter set): ``sweep/<column~value_column~value...>/``, named as
  Snakemake's ``Paramspace(filename_params="*")`` names them (its own helper renames
  dotted columns to ``_0``, ``_1``, so the names are made here), spaces dropped;
- both: ``rounds/<name>/sweep/<column~value_...>/``.

Stages computed once: each stage's result is keyed by a digest of the config
sections it reads and of the keys of the stages it builds on
(:func:`bigstream_workflow.layout.stage_keys`). The first set with a key computes the
stage; every later set with the same key reads it from that set's folder
(``set.reuse``: result path prefix -> folder). So the fixed image's key points are
detected once for all rounds, and a sweep over matching parameters detects key points
once. A section is read whole (less sharing, never a
wrong one): only the matching parameters are left out of the key points' key, because
detection does not read them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bigstream_workflow.config import ConfigError, merge_config
from bigstream_workflow.layout import stage_keys, without_keys

SET_KEYS = ("rounds", "sweep", "set")
"""Config keys of the multi-set layer itself (not part of any stage's key)."""
ROUND_KEYS = ("name", "ground_truth")
"""Keys of a ``rounds`` entry that are not the moving image's: its folder name and its own
known transform (synthetic rounds; replaces the top-level ``ground_truth``)."""


@dataclass(frozen=True)
class RunSet:
    """One registration of a multi-set run.

    ``name``: its folder relative to ``output_dir`` (``rounds/r2``,
    ``sweep/deform.iterations~[0,0]``...); ``round``: the round's name (None without
    rounds); ``params``: the sweep row, dotted key -> value ({} without a sweep);
    ``config``: the set's whole configuration (``output_dir`` = its folder, ``set``
    = its name and what it reuses from other sets).
    """

    name: str
    round: str | None
    params: dict[str, Any]
    config: dict[str, Any]

    @property
    def folder(self) -> str:
        return self.config["output_dir"]


def parse_value(text: str) -> Any:
    """A TSV cell as YAML (``0.7`` -> float, ``[0, 0]`` -> list, ``true`` -> bool)."""
    return yaml.safe_load(text) if isinstance(text, str) else text


def read_sweep(path: str | Path, defaults: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The sweep TSV's rows: (folder name, dotted key -> value) per row.

    Every column must name a parameter of the configuration (``stage.key`` or
    ``stage.block.key``, as in config/config.yaml); raises :class:`ConfigError`
    naming the file and the column otherwise, or when the table has no row.
    """
    import pandas as pd

    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ConfigError(f"`sweep` = {str(path)!r}: cannot read the table: {error}") from error
    if table.empty:
        raise ConfigError(f"`sweep` = {str(path)!r}: the table has no parameter set (no row)")
    for column in table.columns:
        node = defaults
        for part in column.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(
                    f"`sweep` = {str(path)!r}: column {column!r} is not a parameter of the "
                    "configuration; expected a dotted key of config/config.yaml such as "
                    "'global_affine.match_threshold' or 'deform.iterations'"
                )
            node = node[part]
        if isinstance(node, dict):
            raise ConfigError(
                f"`sweep` = {str(path)!r}: column {column!r} names a whole section; expected "
                f"one of its parameters, e.g. {column}.{next(iter(node))}"
            )
        if column.split(".")[0] in ("fixed", "moving", "output_dir", *SET_KEYS):
            raise ConfigError(
                f"`sweep` = {str(path)!r}: column {column!r} is not a stage parameter "
                "(images go in `moving` / `rounds`, the output in `output_dir`)"
            )
    names = ["_".join(f"{column}~{''.join(str(value).split())}" for column, value in row.items())
             for _, row in table.iterrows()]  # fmt: skip
    if any("/" in name for name in names):
        raise ConfigError(
            f"`sweep` = {str(path)!r}: a value holds '/', which cannot be in a folder name"
        )
    rows = [{column: parse_value(value) for column, value in row.items()}
            for _, row in table.iterrows()]  # fmt: skip
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"`sweep` = {str(path)!r}: parameter sets {repeated} appear twice")
    return list(zip(names, rows, strict=True))


def nested(params: dict[str, Any]) -> dict[str, Any]:
    """``{"deform.iterations": v}`` -> ``{"deform": {"iterations": v}}``."""
    result: dict[str, Any] = {}
    for dotted, value in params.items():
        *parents, last = dotted.split(".")
        node = result
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return result


def _rounds(config: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    rounds = config.get("rounds") or []
    if not rounds:
        return [(None, config["moving"])]
    names = [entry["name"] for entry in rounds]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"`rounds` names {repeated} more than once: each names a folder")
    return [
        (entry["name"], merge_config(config["moving"], without_keys(entry, ROUND_KEYS)))
        for entry in rounds
    ]


def expand_sets(config: dict[str, Any], defaults: dict[str, Any]) -> list[RunSet]:
    """The sets of a multi-set ``config`` (see the module's docstring), in order, each with
    its whole configuration and what it reuses from the sets before it."""
    sweep = read_sweep(config["sweep"], defaults) if config.get("sweep") else [(None, {})]
    base = without_keys(config, SET_KEYS)
    round_truth = {entry["name"]: entry.get("ground_truth") for entry in config.get("rounds") or []}
    owners: dict[tuple[str, str], str] = {}
    sets = []
    for round_name, moving in _rounds(config):
        for pattern, params in sweep:
            parts = [*(["rounds", round_name] if round_name else []),
                     *(["sweep", pattern] if pattern else [])]  # fmt: skip
            name = "/".join(parts)
            folder = str(Path(config["output_dir"]) / name)
            set_config = merge_config(copy.deepcopy(base), nested(params))
            set_config.update(moving=moving, output_dir=folder, rounds=[], sweep=None)
            if round_truth.get(round_name):
                set_config["ground_truth"] = round_truth[round_name]
            reuse = {}
            for prefix, key in stage_keys(set_config).items():
                owner = owners.setdefault((prefix, key), folder)
                if owner != folder:
                    reuse[prefix] = owner
            set_config["set"] = {"name": name, "reuse": reuse}
            sets.append(RunSet(name, round_name, params, set_config))
    return sets
