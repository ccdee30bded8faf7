"""Storage errors of a job (disk full, no permission, read-only): one line that says which
path, which job, and what to do.

A job that cannot write fails with an ``OSError`` deep in numpy, pyarrow, zarr or the
logging module; its traceback says little to someone whose disk is full. These are the
errors more memory or time cannot fix, so the job's retries do not ask for more of them
(:mod:`bigstream_workflow.retries`).

Classified (``errno``): ENOSPC (disk, or its inodes, full), EDQUOT (quota), EFBIG (file size
limit, e.g. ``ulimit -f``), EACCES and EPERM (permissions), EROFS (read-only mount), and
EIO and ESTALE: an I/O error or a network filesystem's stale handle is a storage fault too,
one memory cannot fix, but it may pass, so its line says the retry may succeed. Other
``OSError``s (a missing input, too many open files) are not storage errors: their
tracebacks stay as they are.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Mapping, Sequence

# How the filesystem holding the path is named in the advice: the mount point (space) or
# the nearest existing folder (permissions).
SPACE, FOLDER = "space", "folder"
MOVE = "or move output_dir, then re-run"

# errno -> (what happened to which path, which place the advice names, the advice: {where}).
# Space errors happen writing; permission and I/O errors reading an input too, so those say
# "on" the path.
STORAGE_ERRORS: dict[int, tuple[str, str, str]] = {
    errno.ENOSPC: ("disk full writing", SPACE, f"free space (or inodes) on {{where}} {MOVE}"),
    errno.EDQUOT: ("disk quota exceeded writing", SPACE,
                   f"free space in your quota on {{where}} {MOVE}"),
    errno.EFBIG: ("file too large writing", SPACE,
                  f"raise the file size limit (ulimit -f) for {{where}} {MOVE}"),
    errno.EROFS: ("read-only filesystem writing", SPACE,
                  "{where} is mounted read-only: move output_dir to a writable filesystem, "
                  "then re-run"),
    errno.EACCES: ("permission denied on", FOLDER,
                   f"give your user access to {{where}} (read, write, enter) {MOVE}"),
    errno.EPERM: ("operation not permitted on", FOLDER,
                  f"give your user access to {{where}} (read, write, enter) {MOVE}"),
    errno.EIO: ("I/O error on", SPACE, "the filesystem of {where} failed; the retry may "
                "succeed, if it repeats ask its administrators"),
    errno.ESTALE: ("stale file handle on", SPACE, "the network filesystem of {where} lost the "
                   "file; the retry may succeed, if it repeats check that no other run "
                   "writes output_dir"),
}  # fmt: skip


def storage_error(error: BaseException | None) -> OSError | None:
    """The storage error (an ``OSError`` whose errno is in :data:`STORAGE_ERRORS`) behind
    ``error``: itself, or the first one in its chain of causes and contexts; else None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in STORAGE_ERRORS:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def job_label(rule: str, wildcards: Mapping[str, str]) -> str:
    """``rule resample_block, batch z0_y0_x2``: a job, as its rule and wildcards."""
    return ", ".join([f"rule {rule}", *(f"{name} {value}" for name, value in wildcards.items())])


def storage_message(error: OSError, job: str = "", outputs: Sequence[str] = ()) -> str:
    """The one line for the storage error ``error`` of ``job`` (:func:`job_label`, or ""):
    what happened to which path (the error's file name, else the job's ``outputs``),
    and what to do, naming the filesystem (mount point and free space) or the folder."""
    what, place, advice = STORAGE_ERRORS[error.errno]
    path = error.filename if error.filename is not None else (outputs[0] if outputs else None)
    if path is None:
        written = "an output"
    elif error.filename is None and len(outputs) > 1:
        written = f"{path} (or another of the job's {len(outputs)} outputs)"
    else:
        written = os.fsdecode(path)
    where = _filesystem(path) if place == SPACE else _folder(path)
    job = f" ({job})" if job else ""
    return f"bigstream-workflow: {what} {written}{job}: {advice.format(where=where)}"


def _existing(path: str | os.PathLike | None) -> str:
    """``path`` made absolute, or its nearest existing parent (the current folder if None)."""
    path = os.path.abspath(os.fsdecode(path) if path is not None else os.curdir)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _folder(path: str | os.PathLike | None) -> str:
    """The folder ``path`` is written in (its nearest existing parent folder)."""
    if path is None:
        return _existing(None)
    return _existing(os.path.dirname(os.path.abspath(os.fsdecode(path))))


def _filesystem(path: str | os.PathLike | None) -> str:
    """The filesystem holding ``path``: its mount point and free space, e.g.
    ``the filesystem at /scratch (0 B free of 2.0 TB)``."""
    mount = _existing(path)
    while not os.path.ismount(mount):
        mount = os.path.dirname(mount)
    try:
        usage = shutil.disk_usage(mount)
    except OSError:
        return f"the filesystem at {mount}"
    return f"the filesystem at {mount} ({_size(usage.free)} free of {_size(usage.total)})"


def _size(count: int) -> str:
    """Bytes as ``12 B``, ``3.4 MB``, ``1.2 TB`` (powers of 1000)."""
    units = ("B", "kB", "MB", "GB", "TB")
    power, value = 0, float(count)
    while value >= 1000 and power < len(units) - 1:
        power, value = power + 1, value / 1000
    return f"{count} B" if power == 0 else f"{value:.1f} {units[power]}"
