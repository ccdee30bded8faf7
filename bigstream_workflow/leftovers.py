"""Temporaries that killed jobs left in ``output_dir``, removed by the next run.

A job killed mid-write (SIGKILL, a cluster's time limit, a node lost) never leaves a
half-written file under a real name: it leaves a temporary beside it, which nothing
would ever remove. Three writers make them, each with its own name pattern:

- :func:`bigstream_core.atomic.atomic_path`: a file ``.<name>.<8 characters>.tmp``
  (``tempfile.mkstemp``'s random part: lower-case letters, digits, ``_``);
- :func:`bigstream_core.atomic.atomic_directory`: a folder of the same pattern;
- Zarr >= 3.1.3's local store (``zarr.storage._local._atomic_write``): a chunk or metadata
  file written as ``<key>.<32 hex digits>.partial`` (the key's last suffix replaced by
  ``pathlib.Path.with_suffix``), then renamed.

:func:`remove_leftovers` removes exactly those, and nothing else. It is safe only while no
job writes in ``output_dir``: the run calls it once it holds the output folder's lock
(:mod:`bigstream_workflow.output_lock`), before its first job. It reads every folder
name of ``output_dir`` once (``os.scandir``, one folder's entries at a time): a store of a
million chunk files costs a walk over them at each run's start.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

ATOMIC = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
"""A temporary of ``atomic_path`` or ``atomic_directory`` (file or folder)."""
ZARR_PARTIAL = re.compile(r".+\.[0-9a-f]{32}\.partial")
"""A chunk or metadata file Zarr's local store was writing."""
SKIPPED = {".snakemake"}
"""Folders never entered (Snakemake's own, should ``output_dir`` be the working directory)."""


def find_leftovers(output_dir: str | os.PathLike) -> list[Path]:
    """Every temporary of :data:`ATOMIC` or :data:`ZARR_PARTIAL` under ``output_dir`` (a
    temporary folder is listed, not entered)."""
    found, folders = [], [Path(output_dir)]
    while folders:
        try:
            entries = list(os.scandir(folders.pop()))
        except FileNotFoundError:
            continue
        for entry in entries:
            is_folder = entry.is_dir(follow_symlinks=False)
            if ATOMIC.fullmatch(entry.name) or (
                not is_folder and ZARR_PARTIAL.fullmatch(entry.name)
            ):
                found.append(Path(entry.path))
            elif is_folder and entry.name not in SKIPPED:
                folders.append(Path(entry.path))
    return sorted(found)


def remove_leftovers(output_dir: str | os.PathLike) -> tuple[int, int]:
    """Remove every temporary :func:`find_leftovers` lists; return how many and their bytes."""
    count = size = 0
    for path in find_leftovers(output_dir):
        if path.is_dir() and not path.is_symlink():
            size += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                size += path.lstat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
        count += 1
    return count, size
