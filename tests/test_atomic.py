"""Outputs appear whole or not at all, with the permissions of any new file or folder."""

import os
import stat

import pytest

from bigstream_core import atomic


@pytest.fixture
def group_umask():
    """A lab's usual umask: the group may read and write, others read."""
    before = os.umask(0o002)
    yield 0o002
    os.umask(before)


def test_a_file_and_a_folder_get_the_permissions_the_umask_gives(tmp_path, group_umask):
    atomic.write_json(tmp_path / "record.json", {"a": 1})
    with atomic.atomic_directory(tmp_path / "store.zarr") as folder:
        (folder / "chunk").write_bytes(b"x")
    assert stat.S_IMODE((tmp_path / "record.json").stat().st_mode) == 0o664
    assert stat.S_IMODE((tmp_path / "store.zarr").stat().st_mode) == 0o775
    assert (tmp_path / "store.zarr" / "chunk").read_bytes() == b"x"


def test_a_failed_write_leaves_nothing_and_the_old_output_as_it_was(tmp_path):
    atomic.write_text(tmp_path / "old.txt", "old")
    with pytest.raises(RuntimeError), atomic.atomic_path(tmp_path / "old.txt") as part:
        part.write_text("half")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError), atomic.atomic_directory(tmp_path / "new.zarr") as folder:
        (folder / "chunk").write_bytes(b"x")
        raise RuntimeError("killed")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["old.txt"]
    assert (tmp_path / "old.txt").read_text() == "old"
