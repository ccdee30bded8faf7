"""One run per output folder: a lock file in ``output_dir`` naming its owner.

Snakemake's own lock lives in the working directory's ``.snakemake/``, so two working
directories (two colleagues, or a re-run from elsewhere) could write one ``output_dir`` at
once and wipe each other's stores. A run takes ``<output_dir>/.bigstream-lock.json``
(created exclusively: of two runs starting together, one gets it) before its first job, and
removes it when it ends. A second run stops at once, naming the owner. A lock whose owner
is gone (a killed run: same host, process no longer there) is reported with the command that
clears it, never cleared silently: that run's cluster jobs may still be writing.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import time
from pathlib import Path

from bigstream_workflow.leftovers import remove_leftovers

LOCK_NAME = ".bigstream-lock.json"


class OutputLocked(Exception):
    """``output_dir`` belongs to another run (or to one that is gone); the message says which."""


def lock_path(output_dir: str | os.PathLike) -> Path:
    """Where the lock of ``output_dir`` lives."""
    return Path(output_dir) / LOCK_NAME


def acquire(output_dir: str | os.PathLike, workdir: str | os.PathLike) -> Path:
    """Take the lock of ``output_dir`` for this process (run from ``workdir``), or raise
    :class:`OutputLocked` naming the owner; released when this process exits."""
    path = lock_path(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = {"host": socket.gethostname(), "pid": os.getpid(),
             "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
             "workdir": os.path.abspath(workdir), "command": " ".join(sys.argv)}  # fmt: skip
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise OutputLocked(_held_message(path)) from None
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(owner, handle, indent=2)
    atexit.register(release, path, os.getpid())
    return path


def release(path: Path, pid: int) -> None:
    """Remove the lock at ``path`` if process ``pid`` (this one) holds it."""
    try:
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == pid:
            path.unlink()
    except (FileNotFoundError, ValueError):
        pass


def _held_message(path: Path) -> str:
    """Who holds the lock at ``path``, and what to do about it."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        owner = {}
    who = (f"host {owner.get('host', '?')}, pid {owner.get('pid', '?')}, started "
           f"{owner.get('started', '?')}, working directory {owner.get('workdir', '?')}, "
           f"command: {owner.get('command', '?')}")  # fmt: skip
    folder = path.parent
    if _gone(owner):
        return (f"output_dir {folder} was locked by a run that is gone ({who}). Nothing was "
                "cleared: make sure none of its cluster jobs still writes there (squeue / "
                f"bjobs), then remove the lock and run again: rm {path}")  # fmt: skip
    return (
        f"output_dir {folder} is in use by another run ({who}). Wait for it to end, or "
        f"choose another output_dir; if that run is gone, remove the lock: rm {path}"
    )


def _gone(owner: dict) -> bool:
    """Whether the lock's owner process is known to be gone (same host, no such process)."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def locking_onstart(previous, output_dir: str | os.PathLike):
    """A Snakemake ``onstart`` handler that takes the lock of ``output_dir`` (stopping the
    run with the owner's details if another run holds it), removes the temporaries killed
    jobs left there (:mod:`bigstream_workflow.leftovers`: no job of another run writes there
    now), then calls ``previous``."""

    def onstart(log):
        try:
            acquire(output_dir, os.getcwd())
        except OutputLocked as error:
            from snakemake.exceptions import WorkflowError

            raise WorkflowError(f"bigstream-workflow: {error}") from None
        count, size = remove_leftovers(output_dir)
        if count:
            from snakemake.logging import logger

            logger.info(f"bigstream-workflow: removed {count} temporaries of killed jobs "
                        f"from {output_dir} ({size} bytes)")  # fmt: skip
        previous(log)

    return onstart
