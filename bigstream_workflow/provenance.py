"""What produced a result: package versions and the full configuration."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bigstream_core.io import Image

PACKAGES = (
    "bigstream-workflow",
    "numpy",
    "scipy",
    "scikit-image",
    "zarr",
    "tensorstore",
    "dask",
    "pandas",
    "snakemake",
)


def package_version(name: str) -> str | None:
    """Installed version of distribution ``name`` (None when absent)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe_images(images: dict[str, dict[str, Image]]) -> dict[str, dict[str, Any]]:
    """JSON-ready metadata of each role's image levels (z, y, x; µm), no voxel data."""
    return {
        role: {
            level: {
                "path": str(image.path),
                "dataset": image.dataset,
                "format": image.format,
                "shape": list(image.shape),
                "dtype": str(image.dtype),
                "chunks": list(image.chunks),
                "spacing_um": list(image.spacing),
                "origin_um": list(image.origin),
                "lead_index": list(image.lead),  # the channel (and t) taken from an OME-Zarr
            }
            for level, image in levels.items()
        }
        for role, levels in images.items()
    }


def provenance(
    config: dict[str, Any], images: dict[str, dict[str, Image]] | None = None
) -> dict[str, Any]:
    """Versions, platform, the config and (given the opened ``images``, role -> level ->
    image) the inputs' paths, shapes, spacings and origins, for output metadata.

    No time stamp: a re-run must reproduce its outputs byte for byte.
    """
    record = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {name: package_version(name) for name in PACKAGES},
        "config": config,
    }
    if images is not None:
        record["inputs"] = describe_images(images)
    return record


def source_digest() -> str:
    """Short SHA-256 over the source files of ``bigstream_core`` and ``bigstream_workflow``.

    Rules carry it in ``params`` so that a change of the math re-runs them
    (Snakemake's own code trigger sees only the rule's script, not the modules
    the script imports).
    """
    import hashlib
    from pathlib import Path

    import bigstream_core

    digest = hashlib.sha256()
    for package in (Path(bigstream_core.__file__).parent, Path(__file__).parent):
        for path in sorted(package.rglob("*.py")):
            digest.update(f"{package.name}/{path.relative_to(package).as_posix()}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
