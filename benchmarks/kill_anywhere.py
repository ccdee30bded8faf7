"""Kill the workflow at random points of every stage; resume; compare every output byte for byte.

    PYTHONPATH=. python benchmarks/kill_anywhere.py --points 32 --seed 0

On the two-round pair of tests/kill_harness.py (``kill_config``: every stage, and the rounds
layer, in 1 to 8 jobs), one uninterrupted reference run, then kill points drawn from the
seed: the stages in turn (deform, stitch, invert, resample, pyramid, finalize, qc, rounds),
each with ``n`` uniform in 1 .. that stage's jobs (SIGKILL once its ``n``-th job opened its
log) and a delay uniform in 0 .. the mean duration of one of its jobs in the reference (so
a point may land in the stage after). ``--per-sequence`` points (default: one pass over
the stages) make a *sequence*: from an empty output folder, each attempt resumes the one
killed before it (``--unlock``, the output lock removed as its message says) and is killed
at the first of the sequence's remaining points it reaches; then a last run goes to the
end and every output is compared with the reference (tests/kill_harness.py:
``compare_trees``), and no temporary may be left. A sequence's points share its verdict.

One row per kill point, printed and written to benchmarks/results/kill_anywhere.tsv:
the point (stage#n+delay), where it landed (the rules of the jobs running at the kill;
``not reached`` if the run passed it), the temporaries the kill left (which the next run
removes), the jobs the next run started, and whether the sequence ended identical (and how
not).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bigstream_core.phantom import write_pair  # noqa: E402
from tests.kill_harness import (  # noqa: E402
    KILL_PAIR,
    STAGES,
    KillPoint,
    Runner,
    kill_config,
    stage_durations,
    stage_jobs,
)

COLUMNS = ("sequence", "point", "landed", "temporaries_left", "jobs_run_after", "identical",
           "differences")  # fmt: skip


def draw_points(count: int, seed: int, jobs: dict, durations: dict) -> list[KillPoint]:
    """``count`` kill points, the stages in turn, ``n`` and the delay drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    stages = [stage for stage in STAGES if stage in jobs]
    return [
        KillPoint(stage, int(rng.integers(1, jobs[stage] + 1)),
                  round(float(rng.uniform(0, durations.get(stage, 1.0))), 2))
        for stage in (stages[i % len(stages)] for i in range(count))
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-sequence", type=int, default=len(STAGES))
    parser.add_argument("--work", type=Path, default=None,
                        help="folder (default: a temporary); its pair and reference run, if "
                        "there (an earlier call's, or the kill test's), are used")  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "kill_anywhere.tsv"
    )
    args = parser.parse_args()
    base = args.work or Path(tempfile.mkdtemp(prefix="kill_anywhere_"))
    if not (base / "pair").exists():
        write_pair(base / "pair", KILL_PAIR, ome_zarr=False)
    runner = Runner(base, kill_config(base / "pair"))
    start = time.monotonic()
    if not runner.reference.exists():  # else kept from an earlier call with this --work
        reference = runner.make_reference()
        if reference.returncode != 0:
            sys.exit(reference.stderr[-3000:])
    jobs, durations = stage_jobs(runner.reference), stage_durations(runner.reference)
    print(f"reference: {time.monotonic() - start:.0f} s; jobs per stage {jobs}; "
          f"mean job s {({k: round(v, 1) for k, v in durations.items()})}", flush=True)  # fmt: skip
    points = draw_points(args.points, args.seed, jobs, durations)
    per_sequence = args.per_sequence
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as table:
        table.write("\t".join(COLUMNS) + "\n")
        print("\t".join(COLUMNS), flush=True)
        for first in range(0, len(points), per_sequence):
            outcome = runner.sequence(points[first : first + per_sequence])
            identical = "yes" if not outcome.differences and not outcome.leftovers else "no"
            found = "; ".join(map(str, outcome.differences + outcome.leftovers))[:500] or "-"
            after = [attempt.started for attempt in outcome.attempts[1:]] + [outcome.rerun]
            rows = [(attempt.point, ",".join(attempt.landed or ["ended"]), attempt.leftovers,
                     sum(next_run.values()))
                    for attempt, next_run in zip(outcome.attempts, after, strict=True)
                    if attempt.point is not None]  # fmt: skip
            rows += [(point, "not reached", "-", "-") for point in outcome.missed]
            for point, landed, left, ran in rows:
                row = (first // per_sequence, point, landed, left, ran, identical, found)
                table.write("\t".join(map(str, row)) + "\n")
                table.flush()
                print("\t".join(map(str, row)), flush=True)
    print(f"{len(points)} kill points in {time.monotonic() - start:.0f} s; table: {args.out}")


if __name__ == "__main__":
    main()
