"""What produced a result: package versions and the full configuration."""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from typing import Any

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


def provenance(config: dict[str, Any]) -> dict[str, Any]:
    """Versions, platform and the config, for output metadata.

    No time stamp: a re-run must reproduce its outputs byte for byte.
    """
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {name: package_version(name) for name in PACKAGES},
        "config": config,
    }


def source_digest() -> str:
    """Short SHA-256 over the source files of ``bigstream_core``.

    Rules carry it in ``params`` so that a change of the math re-runs them
    (Snakemake's own code trigger sees only the rule's script, not the modules
    the script imports).
    """
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.rglob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
