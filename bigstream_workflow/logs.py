"""Logging set-up for the scripts the rules run."""

from __future__ import annotations

import logging
import sys


def configure(log_path: str | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send the ``bigstream_core`` loggers to ``log_path`` (the rule's ``log:``) and stderr.

    An uncaught exception is logged there too, so a failed job's log says why.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logger = logging.getLogger("bigstream_core")

    def log_uncaught(kind, value, traceback):
        logger.error("%s: %s", kind.__name__, value, exc_info=(kind, value, traceback))

    sys.excepthook = log_uncaught
    return logger
