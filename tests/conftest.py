"""Shared fixtures: synthetic pairs with a known transform, configs, Snakemake runs."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from bigstream_core.io import open_image
from bigstream_core.phantom import preset, write_pair

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory) -> Path:
    """The 'tiny' synthetic pair (N5 + OME-Zarr + truth.json), written once per session."""
    out = tmp_path_factory.mktemp("tiny_pair")
    write_pair(out, preset("tiny"))
    return out


@pytest.fixture(scope="session")
def tutorial(tmp_path_factory) -> dict:
    """docs/tutorial.py's namespace after a whole run into a temporary folder, once per
    session: it writes the demo's pair (``DATA``), registers it with the Python API step by
    step, then runs config/demo.yaml (``config``) through the workflow. tests/test_tutorial.py
    checks the script; tests/test_workflow.py checks that workflow run."""
    work = tmp_path_factory.mktemp("tutorial")
    script = ROOT / "docs" / "tutorial.py"
    argv = sys.argv
    sys.argv = [str(script), "--work", str(work), "--figures", str(work / "figures")]
    try:
        return runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv


@pytest.fixture(scope="session")
def deformed_pair(tmp_path_factory) -> Path:
    """The demo's pair: 'small' with a smooth deformation of up to 4 µm on top of the affine."""
    out = tmp_path_factory.mktemp("deformed_pair")
    write_pair(out, dataclasses.replace(preset("small"), deform_amplitude_um=4.0))
    return out


def demo_config() -> dict:
    """The demo's stage parameters (cells of radius 1-5 low-res voxels), without its paths."""
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    return {
        key: value
        for key, value in config.items()
        if isinstance(value, dict) and "path" not in value
    }


def pair_config(pair: Path, output_dir: Path, **overrides) -> dict:
    """A user config for ``pair`` (only the keys a user must give, plus overrides)."""
    config = {
        "fixed": {"path": str(pair / "fixed.n5")},
        "moving": {"path": str(pair / "moving.n5")},
        "output_dir": str(output_dir),
        "ground_truth": str(pair / "truth.json"),
    }
    for key, value in overrides.items():
        config[key] = value
    return config


def deploy(workdir: Path) -> Path:
    """A lab's deployment of the workflow in ``workdir``, as ``snakedeploy deploy-workflow``
    writes it: a Snakefile that loads ours as a module, its config the user's, and uses
    every rule (``github(...)`` there, this checkout's path here)."""
    workdir.mkdir(parents=True, exist_ok=True)
    snakefile = workdir / "Snakefile"
    snakefile.write_text(
        f"module bigstream_workflow:\n    snakefile:\n        {str(SNAKEFILE)!r}\n"
        "    config:\n        config\n\n\nuse rule * from bigstream_workflow\n"
    )
    return snakefile


def snakemake_command(
    workdir: Path, config: dict, *args: str, profile: str = "local", snakefile: Path = SNAKEFILE
) -> list:
    """The real snakemake CLI on ``config`` (written to ``workdir``) with ``profiles/<profile>``
    (``snakefile``: ours, or a deployment's from :func:`deploy`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    configfile = workdir / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    return [
        sys.executable, "-m", "snakemake", *args,
        "--snakefile", str(snakefile), "--directory", str(workdir),
        "--profile", str(ROOT / "profiles" / profile), "--cores", "2",
        "--configfile", str(configfile),
    ]  # fmt: skip


SNAKEMAKE_ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def digest(path, component=None) -> str:
    """SHA-256 of a whole Zarr array (or of one of its groups' arrays)."""
    array = zarr.open_array(path, path=component, mode="r") if component else zarr.open_array(path)
    return hashlib.sha256(np.ascontiguousarray(array[...]).tobytes()).hexdigest()


def run_snakemake(
    workdir: Path,
    config: dict,
    *args: str,
    profile: str = "local",
    timeout: int = 600,
    snakefile: Path = SNAKEFILE,
):
    """Run the real snakemake CLI on ``config`` in ``workdir`` with ``profiles/<profile>``."""
    command = snakemake_command(workdir, config, *args, profile=profile, snakefile=snakefile)
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=SNAKEMAKE_ENV
    )


def write_channels(n5: Path, path: Path, labels: dict[str, int]) -> None:
    """The N5 pair image ``n5`` (datasets highres, lowres) as one multichannel OME-Zarr, the
    way acquisition software writes a round: NGFF 0.4, axes c, z, y, x, levels "0" (high-res)
    and "1" (low-res), channel ``label`` = the image times ``labels[label]``, with
    ``omero.channels`` labels."""
    group = zarr.open_group(path, mode="w", zarr_format=2)
    datasets = []
    for level, dataset in (("0", "highres"), ("1", "lowres")):
        image = open_image(n5, dataset)
        data = image.read((slice(None),) * 3).astype(np.uint16)
        group.create_array(level, data=np.stack([data * k for k in labels.values()]),
                           chunks=(1, 32, 64, 64))  # fmt: skip
        datasets.append({"path": level, "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, *image.spacing]},
            {"type": "translation", "translation": [0.0, *image.origin]}]})  # fmt: skip
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"
    ]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    group.attrs["omero"] = {"channels": [{"label": label} for label in labels]}
