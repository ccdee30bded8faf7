"""A run SIGKILLed (Snakemake and every job, the whole process group) in each stage in turn,
each time resumed as a user would, ends with the same bytes as an uninterrupted run, and
with no temporaries left (tests/kill_harness.py; benchmarks/kill_anywhere.py draws many
random kill points)."""

from __future__ import annotations

import pytest

from bigstream_core.phantom import write_pair
from tests.conftest import deploy
from tests.kill_harness import KILL_PAIR, STAGES, KillPoint, Runner, kill_config

pytestmark = pytest.mark.slow

# One kill point in each stage the issue names, each attempt resuming the one killed before
# and killed at the first of the remaining points it reaches: the deformation once 3 of its 4
# blocks started (on 2 cores, one has finished), every other stage as its first job opens
# its log. The inverting, finalizing and QC jobs are left to the benchmark
# (benchmarks/kill_anywhere.py draws random points in every stage), to keep CI short.
POINTS = [KillPoint("deform", 3)] + [
    KillPoint(stage) for stage in ("stitch", "resample", "pyramid", "rounds")
]


def test_a_run_killed_in_every_stage_ends_with_the_same_bytes(tmp_path):
    pair = tmp_path / "pair"
    write_pair(pair, KILL_PAIR, ome_zarr=False)
    # through a lab's deployment (our Snakefile as a module of theirs)
    runner = Runner(tmp_path, kill_config(pair), snakefile=deploy(tmp_path / "lab"))
    reference = runner.make_reference()
    assert reference.returncode == 0, reference.stderr[-3000:]
    outcome = runner.sequence(POINTS)
    assert not outcome.missed and len(outcome.attempts) == len(POINTS)
    for attempt in outcome.attempts:  # each kill landed while a job of its stage ran
        assert any(rule.endswith(STAGES[attempt.point.stage]) for rule in attempt.landed), attempt
    assert not outcome.differences, outcome.differences
    assert not outcome.leftovers, outcome.leftovers
    # the deform blocks finished before the first kill were kept, not computed again
    deform = outcome.attempts[0]
    assert deform.point == POINTS[0]
    finished = {name: mtime for name, mtime in deform.files.items() if "/deform/blocks/" in name}
    assert finished and all(
        (runner.results / name).stat().st_mtime_ns == mtime for name, mtime in finished.items()
    )
    assert sum(n for rule, n in outcome.attempts[1].started.items()
               if rule.endswith("deform_block")) < 4  # fmt: skip
