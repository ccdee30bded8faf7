"""Checking a workflow configuration before any job runs.

The configuration is a plain dict (what Snakemake's ``config`` holds after
``config/config.yaml`` and the user's ``--configfile`` are merged). Two layers
of checks, both raising :class:`ConfigError` with messages that name the key,
the value found and what was expected:

1. :func:`validate_config`: the JSON schema (types, ranges, unknown keys) plus
   the rules a schema cannot say (``min_radius <= max_radius``, per-level lists
   of equal length).
2. :func:`open_config_images`: every image the config names is opened (metadata
   only) and must exist, be 3D and non-empty.

Axis order of every list is z, y, x; physical units are µm.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bigstream_core.io import Image, ImageError, open_image

if TYPE_CHECKING:
    import jsonschema

IMAGE_ROLES = ("fixed", "moving")
LEVELS = ("lowres", "highres")
REFINE_STAGES = ("global_affine", "local_affine")
RETIRED_KEYS = {
    f"local_affine.{key}": (
        "the local stage no longer detects key points: it takes each tile's from the global "
        f"stage's tables, so set `global_affine.{key}` instead"
    )
    for key in ("min_radius", "max_radius", "num_sigma_max")
} | {
    f"{stage}.refine.smooth_sigmas": (
        f"renamed `{stage}.refine.level_sigmas` (voxels of each level, as before: the name "
        "keeps it apart from `deform.smooth_sigmas`, which counts full-res voxels)"
    )
    for stage in ("global_affine", "local_affine")
}
"""Keys of earlier versions (dotted paths) -> what to do instead (a clearer message than
'unknown key')."""


class ConfigError(ValueError):
    """A configuration value that the workflow cannot run with."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file into a dict (an empty file gives ``{}``)."""
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def merge_config(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, key by key at every depth, as Snakemake merges a
    ``--configfile`` onto the workflow's ``configfile:`` (neither input is changed)."""
    merged = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = merge_config(merged[key], value) if both else value
    return merged


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line per schema violation: key, value found, what was expected."""
    key = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        where = f"in `{key}`" if error.absolute_path else "at the top level"
        return f"unknown key(s) {unknown} {where}; allowed keys: {allowed}"
    if error.validator == "required":
        missing = error.message.split("'")[1]
        prefix = f"{key}." if error.absolute_path else ""
        return f"`{prefix}{missing}` is missing (required)"
    if error.validator == "type" and error.instance is None:
        return f"`{key}` is not set: expected a value of type {error.validator_value}"
    expected = {
        "type": f"of type {error.validator_value}",
        "enum": f"one of {error.validator_value}",
        "minimum": f">= {error.validator_value}",
        "maximum": f"<= {error.validator_value}",
        "exclusiveMinimum": f"> {error.validator_value}",
        "minItems": f"a list of at least {error.validator_value} items",
        "maxItems": f"a list of at most {error.validator_value} items",
        "minLength": "a non-empty string",
        "oneOf": error.schema.get("description", error.message),
    }.get(error.validator, error.message)
    return f"`{key}` = {error.instance!r}: expected {expected}"


def _retired_keys(config: dict[str, Any]) -> list[str]:
    """One line per key of an earlier version that the config still sets."""
    problems = []
    for dotted, advice in RETIRED_KEYS.items():
        *sections, key = dotted.split(".")
        block = config
        for section in sections:
            block = block.get(section) if isinstance(block, dict) else None
        if isinstance(block, dict) and key in block:
            problems.append(f"`{dotted}` is no longer a setting: {advice}")
    return problems


def _cross_field_problems(config: dict[str, Any]) -> list[str]:
    problems = []
    output = config["output"]
    if output["shard"] and output["format"] != "ome-zarr-0.5":
        problems.append(
            f"`output.shard` = true with `output.format` = {output['format']!r}: shards are a "
            "Zarr v3 feature; expected `output.format: ome-zarr-0.5`, or `output.shard: false`"
        )
    keypoints = config["global_affine"]
    if keypoints["min_radius"] > keypoints["max_radius"]:
        problems.append(
            f"`global_affine.min_radius` = {keypoints['min_radius']} is larger than "
            f"`global_affine.max_radius` = {keypoints['max_radius']}: expected min_radius <= "
            "max_radius"
        )
    for stage in REFINE_STAGES:
        refine = config[stage]["refine"]
        if len(refine["shrink_factors"]) != len(refine["level_sigmas"]):
            problems.append(
                f"`{stage}.refine.shrink_factors` {refine['shrink_factors']} and "
                f"`{stage}.refine.level_sigmas` {refine['level_sigmas']} give one value per "
                "pyramid level and must have the same length"
            )
    deform = config["deform"]
    per_level = ("iterations", "shrink_factors", "smooth_sigmas") + (
        ("cc_radius",) if isinstance(deform["cc_radius"], list) else ()
    )
    lengths = {key: len(deform[key]) for key in per_level}
    if len(set(lengths.values())) > 1:
        problems.append(
            "`deform.iterations`, `deform.shrink_factors`, `deform.smooth_sigmas` (and "
            "`deform.cc_radius` when a list) give one value per resolution level and must "
            f"have the same length; got {lengths}"
        )
    if deform["enabled"]:
        problems += _field_shrink_problems(deform)
    if config["fixed"].get("channels"):
        problems.append(
            "`fixed.channels` lists other channels of the fixed image; only the moving image's "
            "channels are resampled (the fixed image's are already in place)"
        )
    channels = [channel["name"] for channel in config["moving"].get("channels", [])]
    repeated = sorted({name for name in channels if channels.count(name) > 1})
    if repeated:
        problems.append(f"`moving.channels` names {repeated} more than once")
    names = [Path(entry["path"]).name for entry in config.get("points", [])]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        problems.append(
            f"`points` lists more than one table named {repeated}: each is written to "
            "<output_dir>/points/<file name>_in_<space>, so file names must differ"
        )
    return problems


def field_shrink(deform: dict[str, Any]) -> int:
    """High-res voxels between the stored displacement field's nodes (per axis):
    ``deform.field_shrink``, or where it is null the deform's finest level's shrink."""
    step = deform.get("field_shrink")
    return deform["shrink_factors"][-1] if step is None else step


def _field_shrink_problems(deform: dict[str, Any]) -> list[str]:
    """A line unless the field's node step divides every deform block size (each block's
    core, a region of the stored field, must hold whole nodes and whole chunks)."""
    step = field_shrink(deform)
    if all(size % step == 0 for size in deform["blocksize"]):
        return []
    value = deform.get("field_shrink")
    found = f"{value}" if value is not None else f"null (the finest level's shrink, {step})"
    return [
        f"`deform.field_shrink` = {found} does not divide every `deform.blocksize` entry "
        f"{list(deform['blocksize'])}: expected a divisor of each (the stored field has a node "
        f"every {step} voxels and each block's core must hold whole nodes), e.g. 1 for the "
        "full-res grid, or block sizes that are multiples of it"
    ]


def validate_config(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Check ``config`` against ``schema`` and the cross-field rules.

    Raises :class:`ConfigError` listing every problem found, one per line.
    """
    import jsonschema  # here: jobs that only open the images never validate

    problems = _retired_keys(config)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    problems = [_describe(error) for error in errors]
    if not problems:
        problems = _cross_field_problems(config)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def open_config_images(config: dict[str, Any]) -> dict[str, dict[str, Image]]:
    """Open (metadata only) the low- and high-res levels of both images.

    Returns ``{"fixed": {"lowres": Image, "highres": Image}, "moving": {...}}``.
    A ``spacing`` override (z, y, x µm) applies to the high-res level; the
    low-res spacing follows from the integer shape ratio between the levels.
    Raises :class:`ConfigError` naming the config key when an image is missing,
    not 3D, empty or has no spacing.
    """
    images: dict[str, dict[str, Image]] = {}
    for role in IMAGE_ROLES:
        entry = config[role]
        override = entry.get("spacing")
        levels: dict[str, Image] = {}
        for level in ("highres", "lowres"):
            key = f"{role}.{level}"
            spacing = override
            if override is not None and level == "lowres":
                factors = _shape_ratio(levels["highres"].shape, _peek_shape(entry, level, key))
                spacing = [s * f for s, f in zip(override, factors, strict=True)]
            try:
                levels[level] = open_image(
                    entry["path"], entry[level] or None, spacing=spacing,
                    channel=entry.get("channel"), nonfinite=entry.get("nonfinite", "background"),
                )  # fmt: skip
            except ImageError as error:
                raise ConfigError(
                    f"`{key}` (path `{role}.path` = {entry['path']!r}): {error}"
                ) from error
        images[role] = {level: levels[level] for level in LEVELS}
        if entry.get("mask"):
            _check_mask_file(entry["mask"], levels["highres"].shape, f"{role}.mask")
    return images


def _check_mask_file(mask: dict[str, Any], image_shape, key: str) -> None:
    """ConfigError unless the mask opens and its shape is a level of the image's."""
    from bigstream_core.masks import MaskError, level_factors

    where = f"`{key}` (path {mask['path']!r}, dataset {mask.get('dataset')!r})"
    try:
        found = open_image(mask["path"], mask.get("dataset") or None, spacing=(1.0, 1.0, 1.0))
        level_factors(image_shape, found.shape, "the mask")
    except (ImageError, MaskError) as error:
        raise ConfigError(f"{where}: {error}") from error


def _peek_shape(entry: dict[str, Any], level: str, key: str) -> tuple[int, int, int]:
    """Shape of a level opened with a placeholder spacing (used to derive low-res spacing)."""
    try:
        image = open_image(entry["path"], entry[level] or None, spacing=(1.0, 1.0, 1.0),
                           channel=entry.get("channel"))  # fmt: skip
        return image.shape
    except ImageError as error:
        raise ConfigError(f"`{key}`: {error}") from error


def _shape_ratio(high: tuple[int, ...], low: tuple[int, ...]) -> list[int]:
    """Integer downsampling factor per axis between two levels (z, y, x)."""
    return [max(1, round(h / lo)) for h, lo in zip(high, low, strict=True)]


def channel_entry(moving: dict[str, Any], channel: dict[str, Any]) -> dict[str, Any]:
    """The image entry of another channel of the moving round: its ``path`` and ``highres``
    dataset (each defaulting to the moving image's), its ``channel`` in a multichannel
    OME-Zarr, the moving image's spacing; it is only resampled, so its one level serves as
    both and it has no mask."""
    highres = channel.get("highres", moving["highres"])
    return {**moving, "path": channel.get("path") or moving["path"], "highres": highres,
            "lowres": highres, "channel": channel.get("channel"), "mask": None,
            "channels": []}  # fmt: skip


def moving_channels(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The channels of the moving round in the order ``aligned.ome.zarr`` holds them: the
    registration channel, then ``moving.channels``; each as (label, image entry). The
    registration channel's label is its ``channel`` when that is a label, else the name of
    its store (``r2`` for ``r2.n5``), with ``-c<index>`` for a channel index."""
    moving = config["moving"]
    label = moving.get("channel")
    if not isinstance(label, str):
        label = Path(moving["path"]).name.split(".")[0] or "moving"
        if moving.get("channel") is not None:
            label += f"-c{moving['channel']}"
    return [(label, moving)] + [
        (channel["name"], channel_entry(moving, channel)) for channel in moving.get("channels", [])
    ]


def open_moving_channels(config: dict[str, Any]) -> list[Image]:
    """The high-res level of every channel of :func:`moving_channels`, opened (metadata)."""
    return [
        open_image(
            entry["path"],
            entry["highres"] or None,
            spacing=entry.get("spacing"),
            channel=entry.get("channel"),
            nonfinite=entry.get("nonfinite", "background"),
        )  # fmt: skip
        for _, entry in moving_channels(config)
    ]


def _check_channels(config: dict[str, Any], moving: Image) -> None:
    """ConfigError unless every other channel opens on the moving high-res grid."""
    for index, channel in enumerate(config["moving"].get("channels", [])):
        key = f"moving.channels[{index}] ({channel['name']!r})"
        entry = channel_entry(config["moving"], channel)
        try:
            image = open_image(entry["path"], entry["highres"] or None, spacing=entry["spacing"],
                               channel=entry["channel"])  # fmt: skip
        except ImageError as error:
            raise ConfigError(f"`{key}`: {error}") from error
        if image.shape != moving.shape or not all(
            abs(a - b) <= 1e-6 * b for a, b in zip(image.spacing, moving.spacing, strict=True)
        ):
            raise ConfigError(
                f"`{key}`: {entry['path']} dataset {entry['highres']!r} is {image.shape} voxels "
                f"of {image.spacing} µm; expected the moving high-res grid, {moving.shape} "
                f"voxels of {moving.spacing} µm (a channel is resampled with the round's "
                "transform, so it must be on the same grid)"
            )


def checked_config(config: dict[str, Any], schema_path: str | Path) -> dict[str, dict[str, Image]]:
    """Validate ``config`` against the schema file and open its images (and the moving
    round's other channels, which must be on its high-res grid).

    What the Snakefile calls before building the DAG; returns the opened images
    (see :func:`open_config_images`) and raises :class:`ConfigError`.
    """
    validate_config(config, load_yaml(schema_path))
    images = open_config_images(config)
    _check_channels(config, images["moving"]["highres"])
    return images
