"""The low-res views are written block by block: batches in any order make the same store as
one job, that store is the moving image under the transform, and a level of more than one
batch plans one job per batch."""

import logging
import re

import numpy as np
import pytest
import zarr

from bigstream_core.io import ImageError, array_image, open_image, write_ome_zarr
from bigstream_core.tiling import budget_batches
from bigstream_workflow.lowres_view import (
    VIEW_BLOCK,
    create_view,
    finish_view,
    view_batches,
    write_view_blocks,
)
from tests.conftest import run_snakemake

LOG = logging.getLogger("test")
SPACING = (2.0, 1.0, 0.5)  # µm, z y x
SHIFT = np.array([3, -5, 7])  # voxels, z y x: fixed voxel v shows moving voxel v + SHIFT


def views_of(tmp_path, batches, order):
    """A view of a random moving image under the shift, its batches written in ``order``."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 60000, (40, 150, 300), dtype=np.uint16)
    moving = array_image(data, SPACING)
    fixed = array_image(np.zeros_like(data), SPACING)
    store = str(tmp_path / f"view_{len(batches)}.ome.zarr")
    create_view(store, fixed, moving)
    for batch in order(list(batches)):
        write_view_blocks(store, fixed, moving, lambda p: p + SHIFT * SPACING, batches[batch], LOG)
    return data, fixed, store


def test_a_view_in_batches_in_any_order_is_one_jobs_view_and_the_moved_image(tmp_path):
    shape = (40, 150, 300)
    batches = budget_batches(shape, VIEW_BLOCK, voxels_per_job=2**17)
    assert len(batches) >= 3
    data, fixed, store = views_of(tmp_path, batches, order=lambda ids: ids[::-1])
    with pytest.raises(ImageError):  # not an image until it is finished
        open_image(store)
    levels = finish_view(store, fixed, "shift", {"bigstream": {"transform": "shift"}})
    whole = views_of(tmp_path, budget_batches(shape, VIEW_BLOCK, 2**30), order=list)[2]
    finish_view(whole, fixed, "shift", {})
    ours, one = zarr.open_group(store, mode="r"), zarr.open_group(whole, mode="r")
    assert levels == len(list(ours.array_keys())) == 4
    for level in map(str, range(levels)):
        assert np.array_equal(ours[level][:], one[level][:]), level
    # level 0 is the moving image shifted (0 where the shift leaves it); the levels above are
    # the whole level's pyramid, as write_ome_zarr makes it in one go
    expected = np.zeros_like(data)
    expected[:-3, 5:, :-7] = data[3:, :-5, 7:]
    assert np.array_equal(ours["0"][:], expected)
    write_ome_zarr(tmp_path / "pyramid.ome.zarr", expected, SPACING)
    pyramid = zarr.open_group(tmp_path / "pyramid.ome.zarr", mode="r")
    for level in ("1", "2", "3"):
        assert np.array_equal(ours[level][:], pyramid[level][:]), level
    image = open_image(store)
    assert image.shape == shape and image.spacing == SPACING
    assert zarr.open_group(store, mode="r").attrs["bigstream"] == {"transform": "shift"}


@pytest.mark.parametrize(
    ("shape", "jobs"), [((40, 80, 80), 1), ((150, 250, 450), 1), ((300, 500, 900), 3)]
)
def test_view_batches_cover_the_level_in_blocks_of_whole_chunks_at_about_67m_voxels(shape, jobs):
    """The demo's level, 8S's and 64S's: one job up to ~67 M voxels, then a job per ~67 M."""
    batches = view_batches(shape)
    assert len(batches) == jobs
    covered = np.zeros(shape, bool)
    for tiles in batches.values():
        for tile in tiles:
            for (start, stop), size, n in zip(tile.core, VIEW_BLOCK, shape, strict=True):
                assert start % size == 0 and (stop % size == 0 or stop == n)
            assert not covered[tile.slices("core")].any()
            covered[tile.slices("core")] = True
    assert covered.all()


def test_a_terabyte_pairs_view_is_tens_of_jobs_of_at_most_twice_the_budget():
    """A 1 TB pair's low-res level (2000 x 10000 x 12500 voxels, 4x smaller per axis)."""
    shape = (500, 2500, 3125)
    batches = view_batches(shape)
    budget = -(-int(np.prod(shape)) // 2**26)
    sizes = [sum(tile.halo_voxels for tile in tiles) for tiles in batches.values()]  # no halo
    assert 0.75 * budget <= len(batches) <= budget
    assert sum(sizes) == np.prod(shape) and max(sizes) <= 2 * 2**26


def test_a_level_of_several_batches_plans_a_job_per_batch(tmp_path):
    """A dry run on a metadata-only pair (no chunk written): a 256 x 512 x 640 low-res level
    (84 M voxels) is created once, written by one job per batch and finished, per view. (A
    level of one batch is one job per view: tests/test_workflow.py.)"""
    lowres = (256, 512, 640)
    for role in ("fixed", "moving"):
        group = zarr.open_group(tmp_path / f"{role}.zarr", mode="w", zarr_format=2)
        for level, factor in (("highres", 2), ("lowres", 1)):
            group.create_array(level, shape=tuple(n * factor for n in lowres),
                               chunks=(128, 128, 128), dtype="uint16")  # fmt: skip
    config = {
        role: {"path": str(tmp_path / f"{role}.zarr"), "spacing": [1.0, 1.0, 1.0]}
        for role in ("fixed", "moving")
    }
    config["output_dir"] = str(tmp_path / "out")
    done = run_snakemake(tmp_path, config, "--dry-run", "--quiet", "rules")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stats = done.stdout[done.stdout.index("Job stats") :]
    rules = ("create_lowres_view", "lowres_view_block", "finalize_lowres_view")
    counts = {rule: int(re.search(rf"^{rule}\s+(\d+)$", stats, re.M).group(1)) for rule in rules}
    batches = len(view_batches(lowres))
    assert batches == 2
    assert counts == {"create_lowres_view": 2, "lowres_view_block": 2 * batches,
                      "finalize_lowres_view": 2}  # fmt: skip
