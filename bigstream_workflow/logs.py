"""Logging set-up for the scripts the rules run."""

from __future__ import annotations

import logging
import os
import sys
import traceback as tracebacks
from typing import Any

from bigstream_core.atomic import write_text
from bigstream_workflow.retries import record_storage_failure
from bigstream_workflow.storage_errors import job_label, storage_error, storage_message


def configure(job: Any = None, level: int = logging.INFO) -> logging.Logger:
    """Send the ``bigstream_core`` loggers to the job's log file and stderr.

    ``job``: the script's ``snakemake`` object (its ``log[0]``, ``rule``, ``wildcards``,
    ``output``), or just a log file's path (no job), or None (stderr only).

    An uncaught exception is logged there too, so a failed job's log says why. A storage
    error (disk full, no permission: :mod:`bigstream_workflow.storage_errors`) is one line
    on stderr, naming the path and the job; the log starts with that line, the traceback
    below it; and the attempt is recorded so that the job's retry does not ask for more
    memory (:mod:`bigstream_workflow.retries`). The log file is opened last: a log that
    cannot be written is such an error itself, reported on stderr.
    """
    if job is None or isinstance(job, (str, os.PathLike)):
        log_path, rule, wildcards, outputs = job, None, {}, []
    else:
        log_path = job.log[0] if job.log else None
        rule, wildcards, outputs = job.rule, dict(job.wildcards.items()), list(job.output)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(sys.stderr)],
        force=True,
    )
    logger = logging.getLogger("bigstream_core")

    def log_uncaught(kind, value, traceback):
        error = storage_error(value)
        if error is None:
            logger.error("%s: %s", kind.__name__, value, exc_info=(kind, value, traceback))
            return
        line = storage_message(error, job_label(rule, wildcards) if rule else "", outputs)
        print(line, file=sys.stderr, flush=True)
        if rule:
            record_storage_failure(rule, wildcards)
        if log_path:
            _prepend(log_path, line, "".join(tracebacks.format_exception(kind, value, traceback)))

    sys.excepthook = log_uncaught
    if log_path:
        logging.getLogger().addHandler(_file_handler(log_path))
    return logger


def _file_handler(log_path: str | os.PathLike) -> logging.Handler:
    """A handler writing to ``log_path`` (emptied first), formatted as the stderr one."""
    handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.getLogger().handlers[0].formatter)
    return handler


def _prepend(log_path: str | os.PathLike, line: str, traceback: str) -> None:
    """Rewrite the log as ``line``, what the job logged, then ``traceback`` (atomically: on
    a full disk the log stays as it was, the line is on stderr anyway)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    try:
        with open(log_path, encoding="utf-8") as handle:
            logged = handle.read()
    except OSError:
        logged = ""
    try:
        write_text(log_path, f"{line}\n{logged}{traceback}")
    except OSError:
        pass
