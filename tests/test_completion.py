"""A store whose blocks are written again is not finished until its closing rule runs."""

import logging

import numpy as np
import pytest
import zarr

from bigstream_core.displacement import create_store, open_field
from bigstream_core.io import ImageError, open_image, write_ome_zarr
from bigstream_workflow.completion import reopen_field, reopen_ome_zarr

LOG = logging.getLogger("test")


def test_reopening_the_aligned_store_withdraws_its_ome_metadata_and_its_record(tmp_path):
    store = tmp_path / "aligned.ome.zarr"
    write_ome_zarr(store, np.ones((8, 8, 8), np.uint16), (1.0, 1.0, 1.0),
                   attrs={"bigstream": {"run": 1}})  # fmt: skip
    record = tmp_path / "complete.json"
    record.write_text("{}")
    reopen_ome_zarr(str(store), str(record), LOG)
    reopen_ome_zarr(str(store), str(record), LOG)  # the next job finds nothing to withdraw
    assert dict(zarr.open_group(store, mode="r").attrs) == {"bigstream": {"run": 1}}
    assert not record.exists()
    with pytest.raises(ImageError, match="without OME-Zarr `multiscales`"):
        open_image(store)


def test_reopening_a_field_store_marks_it_incomplete_and_removes_its_record(tmp_path):
    array = create_store(tmp_path / "field.zarr", (4, 4, 4), (1.0, 1.0, 1.0), (0, 0, 0),
                         (4, 4, 4))  # fmt: skip
    array.attrs["complete"] = True
    record = tmp_path / "field.json"
    record.write_text("{}")
    open_field(tmp_path / "field.zarr")  # complete: it opens
    reopen_field(array, str(record), LOG)
    assert not record.exists()
    with pytest.raises(ValueError, match="the field is not complete"):
        open_field(tmp_path / "field.zarr")
