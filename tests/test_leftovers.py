"""Temporaries of killed jobs: found by their writers' own name patterns, removed, nothing else."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from bigstream_workflow.leftovers import find_leftovers, remove_leftovers
from bigstream_workflow.output_lock import LOCK_NAME

# A job killed mid-write by each of the three writers at once (os._exit: no clean-up runs,
# as under SIGKILL): atomic_path's file, atomic_directory's folder, Zarr's chunk.
KILLED_WRITER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import numpy as np, zarr
    from zarr.storage._local import _atomic_write
    from bigstream_core.atomic import atomic_directory, atomic_path

    out = Path(sys.argv[1])
    array = zarr.create_array(out / "image.zarr", shape=(4, 4), chunks=(2, 2), dtype="u2",
                              zarr_format=2)
    array[...] = 1
    with atomic_path(out / "qc" / "metrics.tsv") as part, atomic_directory(
        out / "deform" / "blocks" / "z0_y0_x0"
    ) as folder, _atomic_write(out / "image.zarr" / "0.1", "wb") as chunk:
        part.write_text("half a table")
        (folder / "z0_y0_x0.npy").write_bytes(b"half a field")
        chunk.write(b"half a chunk")
        chunk.flush()
        os._exit(0)
""")


def test_a_killed_jobs_temporaries_are_removed_and_nothing_else(tmp_path):
    out = tmp_path / "results"
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out)], capture_output=True,
                            text=True)  # fmt: skip
    assert killed.returncode == 0, killed.stderr
    real = {
        LOCK_NAME: "{}",
        "notes.tmp": "a user's file",
        ".notes.tmp": "a user's hidden file",
        "qc/x.abcdefgh.tmp": "no leading dot: not ours",
        ".snakemake/.x.abcdefgh.tmp": "Snakemake's folder is never entered",
        "image.zarr/0.0.partial": "no 32-digit hex part",
    }
    for name, text in real.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    before = {p for p in out.rglob("*") if p.is_file()}
    leftovers = find_leftovers(out)
    assert [p.relative_to(out).parent.as_posix() for p in leftovers] == [
        "deform/blocks", "image.zarr", "qc"
    ]  # fmt: skip
    assert leftovers[0].is_dir() and leftovers[0].name.startswith(".z0_y0_x0.")
    assert leftovers[1].name.startswith("0.") and leftovers[1].name.endswith(".partial")
    assert leftovers[2].name.startswith(".metrics.tsv.")
    assert remove_leftovers(out) == (3, len("half a field" + "half a chunk" + "half a table"))
    after = {p for p in out.rglob("*") if p.is_file()}
    assert after == {p for p in before if not any(p.is_relative_to(x) for x in leftovers)}
    assert all((out / name).read_text() == text for name, text in real.items())
    assert (out / "image.zarr" / "0.0").exists() and not find_leftovers(out)
