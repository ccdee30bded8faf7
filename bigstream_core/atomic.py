"""Writes that appear complete or not at all.

Every output file is first written under a temporary name in
the same folder and then renamed into place (a rename within one filesystem is
atomic), so a killed job never leaves a truncated file that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``, ending in ``suffix``; rename it to ``path``
    on success (``suffix``: for writers that choose the format by the name's extension).

    On an exception the temporary file is removed and ``path`` is left as it was. An
    ``OSError`` of a write names ``path`` (a write error names no file, or the temporary):
    a full disk or a missing permission is reported with the output it stopped.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide it from the group
        os.replace(temporary, path)
    except OSError as error:
        if error.filename in (None, temporary, Path(temporary)):
            error.filename = str(path)
        raise
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _umask() -> int:
    """The process's file creation mask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write ``data`` as indented JSON."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_table(path: str | Path, table: pd.DataFrame) -> None:
    """Atomically write a table: TSV for ``.tsv`` paths, Parquet for ``.parquet``."""
    with atomic_path(path) as temporary:
        if str(path).endswith(".parquet"):
            table.to_parquet(temporary, index=False)
        else:
            table.to_csv(temporary, sep="\t", index=False)


def write_npy(path: str | Path, array: Any) -> None:
    """Write an array as ``.npy`` atomically (readable later with ``numpy.load(mmap_mode="r")``)."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, array)


@contextmanager
def npy_blocks(
    path: str | Path, shape: tuple[int, int, int], dtype
) -> Iterator[Callable[[tuple[slice, slice, slice], np.ndarray], None]]:
    """Write a ``.npy`` of ``shape`` (z, y, x) and ``dtype`` block by block, atomically:
    yields ``write(region, block)``, which puts ``block`` at ``region`` (3 slices of step 1,
    within ``shape``) straight into the file, x rows at a time (whole planes where a block
    spans y and x), so memory is the block's whatever the array's size. The file appears at
    ``path`` once the ``with`` block ends without an error; voxels never written are 0."""
    dtype = np.dtype(dtype)
    row_bytes = shape[2] * dtype.itemsize
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                  "shape": tuple(int(n) for n in shape)}  # fmt: skip
        np.lib.format.write_array_header_1_0(handle, header)
        handle.flush()
        start = handle.tell()
        handle.truncate(start + int(np.prod(shape)) * dtype.itemsize)
        descriptor = handle.fileno()

        def write(region: tuple[slice, slice, slice], block: np.ndarray) -> None:
            block = np.ascontiguousarray(block, dtype=dtype)
            z, y, x = (s.start for s in region)
            whole_planes = block.shape[1:] == tuple(shape[1:])
            for i in range(block.shape[0]):
                plane = start + (z + i) * shape[1] * row_bytes
                if whole_planes:
                    os.pwrite(descriptor, block[i].tobytes(), plane)
                    continue
                for j in range(block.shape[1]):
                    offset = plane + (y + j) * row_bytes + x * dtype.itemsize
                    os.pwrite(descriptor, block[i, j].tobytes(), offset)

        yield write


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; rename it to ``path`` on success.

    For outputs that are folders (a Zarr store): a killed job leaves only a
    hidden ``.name.*.tmp`` folder, never a half-written store under the real name. The
    folder gets the permissions of any new folder (0777 less the umask), not mkdtemp's 0700.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield temporary
        os.chmod(temporary, 0o777 & ~_umask())  # mkdtemp's 0700 would hide it from the group
        if path.exists():
            shutil.rmtree(path)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)
