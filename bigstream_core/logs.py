"""Logging set-up for the scripts the rules run."""

from __future__ import annotations

import logging
import sys


def configure(log_path: str | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send the ``bigstream_core`` loggers to ``log_path`` (the rule's ``log:``) and stderr."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    return logging.getLogger("bigstream_core")
