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

    def line_of(error: OSError) -> str:
        return storage_message(error, job_label(rule, wildcards) if rule else "", outputs)

    log_file = None

    def log_uncaught(kind, value, traceback):
        error = storage_error(value)
        if error is None:
            logger.error("%s: %s", kind.__name__, value, exc_info=(kind, value, traceback))
            return
        line = line_of(error)
        print(line, file=sys.stderr, flush=True)
        if rule:
            record_storage_failure(rule, wildcards)
        if log_file is not None and log_file.flush_or_fail():
            _prepend(log_path, line, "".join(tracebacks.format_exception(kind, value, traceback)))

    sys.excepthook = log_uncaught
    if log_path:
        log_file = _LogFile(log_path, line_of)
        logging.getLogger().addHandler(log_file)
    return logger


class _LogFile(logging.FileHandler):
    """The job's log file (emptied first), formatted as stderr. When it cannot be written
    (a storage error), it says so once on stderr, ``line_of(error)`` naming the log, and
    stops writing: no logging error per record, stderr goes on."""

    def __init__(self, log_path: str | os.PathLike, line_of):
        super().__init__(log_path, mode="w", encoding="utf-8")
        self.setFormatter(logging.getLogger().handlers[0].formatter)
        self.line_of, self.failed = line_of, False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        if not self._fail(sys.exc_info()[1]):
            super().handleError(record)

    def flush_or_fail(self) -> bool:
        """Write what is buffered; whether the log is still being written."""
        try:
            self.flush()
        except OSError as error:
            self._fail(error)
        return not self.failed

    def _fail(self, error: BaseException | None) -> bool:
        """Stop writing on a storage error (saying so once); whether it was one."""
        error = storage_error(error)
        if error is None:
            return False
        if not self.failed:
            self.failed = True
            if error.filename is None:
                error.filename = self.baseFilename
            print(self.line_of(error), file=sys.stderr, flush=True)
        return True


def _prepend(log_path: str | os.PathLike, line: str, traceback: str) -> None:
    """Rewrite the log as ``line``, what the job logged, then ``traceback``: atomically, so
    that a log that cannot be rewritten (its disk is full) is left as it was, then only
    appended to, if even that can be done (the line is on stderr anyway)."""
    try:
        with open(log_path, encoding="utf-8") as handle:
            logged = handle.read()
        write_text(log_path, f"{line}\n{logged}{traceback}")
    except OSError:
        try:
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(f"{line}\n{traceback}")
        except OSError:
            pass
