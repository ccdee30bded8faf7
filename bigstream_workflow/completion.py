"""What says a store is finished, taken back before a job writes into it again.

A store's blocks can be rewritten without the store being made anew (a lost block record,
``--forcerun``, a changed parameter of one stage): until its closing rule runs again, a
reader outside Snakemake (napari, another script) must not take the half-rewritten store
for a finished one. So the first block job to write removes the markers, and only the
closing rule writes them back.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bigstream_core.io import withdraw_ome_metadata


def reopen_ome_zarr(store: str, record: str, log: logging.Logger) -> None:
    """Before writing into an OME-Zarr ``store`` that jobs fill block by block
    (``aligned.ome.zarr``, a low-res view): remove its OME metadata and its completion
    record ``record`` (``aligned/complete.json``, ``<view>/moving_lowres_aligned/complete.json``)
    if they are there; the store's closing rule (``finalize_aligned``,
    ``finalize_lowres_view``) writes both back."""
    if withdraw_ome_metadata(store):
        log.info("%s: OME metadata withdrawn until its closing rule", store)
    Path(record).unlink(missing_ok=True)


def reopen_field(array, record: str, log: logging.Logger) -> None:
    """Before writing regions of a field store (``array``, opened for writing): mark it
    incomplete (its ``complete`` attribute, which :func:`bigstream_core.displacement.open_field`
    requires) and remove its completion record ``record`` (``transform/<name>.json``) if
    they are there; ``finish_field`` writes both back."""
    if array.attrs.get("complete"):
        array.attrs["complete"] = False
        log.info("%s: marked incomplete until finish_field", array.store)
    Path(record).unlink(missing_ok=True)
