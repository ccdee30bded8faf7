"""Retries that ask for more memory and time only after failures more of them can fix.

The cluster profiles retry a failed job (``retries``), and every job's ``mem_mb`` and
``runtime`` grow with Snakemake's ``attempt``: a job killed for memory or time gets twice,
then three times as much. A job that failed because its disk was full or not writable
(:mod:`bigstream_workflow.storage_errors`) would get the same, uselessly (and queue longer
for it). Snakemake 9 has no way for a job to say "do not retry me" or why it failed: retries
are a count per rule (``retries``, ``--retries``), and a resource function sees only the
attempt number (plus wildcards, input, threads and the rule's name, ``rulename``). So a job
that fails on storage leaves a record, an empty file named after its rule and wildcards in
``.snakemake/bigstream-storage-failures/`` of the working directory (where Snakemake runs
every job, local or on a cluster node); the resource functions count the attempt minus
those records (:func:`resource_attempt`). The retry itself still happens, with the first
attempt's memory and time: space may have been freed meanwhile, and a stale handle or an
I/O error may pass.

An empty file needs no data block, so the record is made on a full disk too (it needs a
free inode, and the folder is made at the start of the run). Where it cannot be made (the
working directory itself is read-only, or out of inodes), the retry asks for more memory as
before. Records are of one run: the run clears them at its start (:func:`clearing_onstart`),
which Snakemake's lock on the working directory makes safe.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

RECORDS = Path(".snakemake") / "bigstream-storage-failures"


def _key(rule: str, wildcards: Mapping[str, str]) -> str:
    """A job's record name: its rule and wildcards (``resample_block.batch=z0_y0_x1``)."""
    values = "".join(f".{name}={quote(str(value), safe='')}" for name, value in wildcards.items())
    return rule + values


def record_storage_failure(
    rule: str, wildcards: Mapping[str, str], folder: str | os.PathLike = RECORDS
) -> bool:
    """Record that this attempt of the job (``rule`` with ``wildcards``) failed on storage:
    a new empty file ``<key>.<n>`` in ``folder``. False where it could not be made."""
    key = _key(rule, wildcards)
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for number in range(1, 1000):
            try:
                os.close(os.open(Path(folder, f"{key}.{number}"), os.O_CREAT | os.O_EXCL, 0o666))
                return True
            except FileExistsError:
                continue
    except OSError:
        pass
    return False


def storage_failures(
    rule: str, wildcards: Mapping[str, str], folder: str | os.PathLike = RECORDS
) -> int:
    """How many attempts of the job (``rule`` with ``wildcards``) failed on storage in this
    run (its records in ``folder``)."""
    key = _key(rule, wildcards)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    return sum(1 for name in names if name.rpartition(".")[0] == key)


def resource_attempt(
    rule: str, wildcards: Mapping[str, str], attempt: int, folder: str | os.PathLike = RECORDS
) -> int:
    """The attempt that sizes memory and time: Snakemake's ``attempt`` (1, 2, ...) less the
    earlier attempts that failed on storage (at least 1)."""
    return max(1, attempt - storage_failures(rule, wildcards, folder))


def resource_attempts(estimate: Callable[..., int]) -> Callable[..., int]:
    """Decorate a rule's resource function ``estimate(wildcards, attempt)`` so that its
    ``attempt`` is :func:`resource_attempt` of the job (Snakemake passes ``rulename``, the
    rule's name as it runs, e.g. ``set0_resample_block`` in a sweep's module)."""

    # no functools.wraps: Snakemake reads the parameters to pass from the signature, and
    # wraps would show it the estimate's (without rulename)
    def sized(wildcards, attempt, rulename):
        return estimate(wildcards, resource_attempt(rulename, dict(wildcards.items()), attempt))

    sized.__name__, sized.__doc__ = estimate.__name__, estimate.__doc__
    return sized


def clear_records(folder: str | os.PathLike = RECORDS) -> None:
    """Forget every record (a new run starts), and make ``folder`` for this run's records."""
    shutil.rmtree(folder, ignore_errors=True)
    Path(folder).mkdir(parents=True, exist_ok=True)


def clearing_onstart(previous):
    """A Snakemake ``onstart`` handler that clears the records (:func:`clear_records`),
    then calls ``previous``."""

    def onstart(log):
        clear_records()
        previous(log)

    return onstart
