"""What produced a result: package versions and the full configuration."""

from __future__ import annotations

import ast
import functools
import hashlib
import platform
import sys
from importlib import metadata
from pathlib import Path
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


CODE_PACKAGES = ("bigstream_core", "bigstream_workflow")
"""The packages whose modules a rule's code digest covers."""


@functools.cache
def script_digest(script: str) -> str:
    """Short SHA-256 over a rule's ``script`` and every module of :data:`CODE_PACKAGES` it
    imports, directly or through other modules (with their packages' ``__init__``), found by
    reading their import statements (nothing is imported; imports inside functions count).

    Rules carry it in ``params`` (Snakemake's own code trigger sees only the rule's script,
    not the modules it imports): editing a module re-runs the rules whose scripts reach it,
    and only those.
    """
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(_import_closure(Path(script).resolve(), root)):
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        digest.update(name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _import_closure(script: Path, root: Path) -> set[Path]:
    """``script`` and the files of the :data:`CODE_PACKAGES` modules it reaches (under ``root``)."""
    found, pending = {script}, [script]
    while pending:
        for path in _imported_files(pending.pop(), root):
            if path not in found:
                found.add(path)
                pending.append(path)
    return found


@functools.cache
def _imported_files(path: Path, root: Path) -> tuple[Path, ...]:
    """The files of the :data:`CODE_PACKAGES` modules ``path``'s import statements name."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return tuple(_module_files(names, root))


def _module_files(names: list[str], root: Path) -> list[Path]:
    """The files of the modules ``names`` (dotted) of :data:`CODE_PACKAGES` that exist under
    ``root``, with their packages' ``__init__.py``; other names are skipped."""
    files = []
    for name in names:
        parts = name.split(".")
        if parts[0] not in CODE_PACKAGES:
            continue
        for depth in range(1, len(parts) + 1):
            base = root.joinpath(*parts[:depth])
            for candidate in (base / "__init__.py", base.with_suffix(".py")):
                if candidate.is_file():
                    files.append(candidate)
    return files


METADATA_FILES = ("attributes.json", ".zarray", ".zattrs", "zarr.json")
"""An image dataset's metadata files (N5, Zarr v2, Zarr v3), whichever it has."""


def image_fingerprint(image: Image) -> dict[str, Any]:
    """What changes when an image is rewritten at the same path, from metadata alone: its
    shape, dtype, chunks, spacing and origin, and the size and modification time (ns) of its
    dataset folder's metadata files (:data:`METADATA_FILES`) and of the folder itself (a
    writer that replaces an image rewrites them; listing every chunk of a terabyte image
    would not be cheap, so chunks rewritten in place under unchanged metadata go unseen)."""
    folder = Path(image.path, image.dataset or "")
    files = {}
    for name in (".", *METADATA_FILES):
        path = folder / name
        if path.exists():
            stat = path.stat()
            files[name] = [0 if name == "." else stat.st_size, stat.st_mtime_ns]
    return {"path": str(folder), "shape": list(image.shape), "dtype": str(image.dtype),
            "chunks": list(image.chunks), "spacing": list(image.spacing),
            "origin": list(image.origin), "files": files}  # fmt: skip


def input_fingerprints(images: dict[str, dict[str, Image]], channels: list[Image]) -> dict:
    """:func:`image_fingerprint` of both levels of both images and of the moving round's
    other ``channels``, keyed ``fixed.lowres``, ..., ``channel1``, ..."""
    prints = {f"{role}.{level}": image_fingerprint(image)
              for role, levels in images.items() for level, image in levels.items()}  # fmt: skip
    return prints | {f"channel{k}": image_fingerprint(c) for k, c in enumerate(channels, 1)}
