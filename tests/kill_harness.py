"""Kill a workflow run anywhere, resume it, and compare every output with an uninterrupted run.

Used by tests/test_kill_anywhere.py (one kill point per stage) and
benchmarks/kill_anywhere.py (many random kill points). A *kill point* is a stage, the
number ``n`` of that stage's jobs that must have started (its ``n``-th log file written
since the attempt began: the scripts open their log first), and a delay in seconds after
that; then the whole process group (Snakemake and every job) gets SIGKILL. The run is
resumed as a user would: ``snakemake --unlock`` (Snakemake's lock), then the output
folder's lock removed as its message says (:mod:`bigstream_workflow.output_lock`), then
the same command again.

Every attempt runs in the same output folder and working directory (the reference is
moved aside once finished), so absolute paths written into the results (provenance, the
summary) are the same, and every file is compared byte for byte except:

- ``logs/``, ``benchmarks/`` and every ``.log`` (each job's time stamps, durations,
  process ids and memory: they differ between any two runs), and the rounds' or sweep's
  summary plot (:data:`UNCOMPARED`: it draws each stage's job seconds);
- the JSON fields and TSV columns of :data:`VOLATILE`, found by comparing uninterrupted
  runs: durations and peak memory, and each Zarr store's creation token (drawn at random
  when the store is made, so that a job can tell a store re-created under it). Every other
  field, every array's chunks and metadata, every ``.npy`` and image are compared byte for
  byte.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bigstream_core.phantom import preset
from bigstream_workflow.leftovers import find_leftovers
from bigstream_workflow.output_lock import LOCK_NAME, OutputLocked, acquire, lock_path
from tests.conftest import SNAKEFILE, SNAKEMAKE_ENV, snakemake_command

STAGES = {
    "deform": "deform_block",
    "stitch": "stitch_field",
    "invert": "invert_field",
    "resample": "resample_block",
    "pyramid": "downsample_aligned",
    "finalize": "finalize_aligned",
    "qc": "qc_report",
    "rounds": "sets_summary",
}
"""Stage name -> the rule whose jobs make it (``rounds``: the rounds layer's summary)."""
SKIPPED = ("logs", "benchmarks")
"""Folders of ``output_dir`` (of each set's folder too) not compared: time stamps, durations,
process ids and memory of each job."""
UNCOMPARED = ("rounds/summary.png", "sweep/summary.png")
"""Files not compared: the sets' summary plot, whose right panel is the jobs' seconds."""
VOLATILE = re.compile(r"token|seconds|.+_s|.+_peak_mb|jobs_s_total")
"""JSON fields (at any depth) and TSV columns that differ between uninterrupted runs:
``token`` of the stores (aligned/store.json, transform/*_store.json and every record that
names its store), ``seconds`` of a deform block (its JSON, deform/report.tsv), ``extract_s``,
``match_s`` and ``keypoints_s`` of the global stage's reports, ``<stage>_s``,
``<stage>_peak_mb`` and ``jobs_s_total`` of the sets' summary table (every field or column
so named in the results is a duration or a peak memory)."""
KILL_PAIR = dataclasses.replace(preset("tiny"), fixed_shape=(24, 72, 72), moving_shape=(26, 76, 68))
"""The 'tiny' pair widened to 72 voxels in y and x: the smallest with a pyramid level above
the high-res one (a level is added while an axis has 64 voxels or more)."""
RULE_LINE = re.compile(r"^(?:local)?rule (\w+):", re.MULTILINE)


def kill_config(pair: Path) -> dict:
    """Two rounds of ``pair``: round r2 images the same moving image again, so it shares
    every stage with r1 (the rounds layer reads them from r1's folder) and adds its own
    plan, QC and summary, then the rounds' summary. Every stage in 2 to 8 jobs (deform
    blocks 24 x 36 x 36 voxels: 4 blocks, 4 stitching and 4 inverting regions; resample
    blocks 12 x 36 x 36: 8; one pyramid level above), 20 and 10 deform iterations; the
    key points are too few for a global affine on so small a pair (14 matches): the
    identity goes on, and the local affines are off."""
    return {
        "fixed": {"path": str(pair / "fixed.n5")},
        "moving": {"path": str(pair / "moving.n5")},
        "rounds": [{"name": "r1"}, {"name": "r2", "path": str(pair / "moving.n5")}],
        "global_affine": {"on_failure": "identity", "min_radius": 2, "max_radius": 4,
                          "cc_radius": 4},
        "local_affine": {"enabled": False},
        "deform": {"blocksize": [24, 36, 36], "iterations": [20, 10], "inverse": True},
        "resample": {"blocksize": [12, 36, 36]},
    }  # fmt: skip


@dataclass(frozen=True)
class KillPoint:
    """SIGKILL once ``n`` jobs of ``stage`` started in this attempt, ``delay`` s after that."""

    stage: str
    n: int = 1
    delay: float = 0.0

    def __str__(self) -> str:
        return f"{self.stage}#{self.n}+{self.delay:.2f}s"


@dataclass
class Attempt:
    """What one killed attempt did: the point that fired (None: the run ended first), where
    the kill landed (the rules of the jobs Snakemake
    had marked incomplete, i.e. running; None when the run ended before the point), the
    jobs it started (rule -> count), the modification time (ns) of every output file
    (relative path) just after the kill, and how many temporaries the kill left."""

    point: KillPoint | None
    landed: list[str] | None
    started: Counter
    files: dict[str, int]
    leftovers: int


@dataclass
class Outcome:
    """A kill sequence's end: the attempts, the points never reached (the run ended first),
    the jobs the last run ran (rule -> count), the differences from the reference (empty:
    identical), the leftovers found at the end."""

    attempts: list[Attempt]
    missed: list[KillPoint]
    rerun: Counter
    differences: list[str]
    leftovers: list[Path]


class Runner:
    """Runs of one config through profiles/local in ``base/work`` writing ``base/results``
    (``snakefile``: ours, or a deployment's, tests/conftest.py's ``deploy``); the reference
    (one uninterrupted run) is kept in ``base/reference``."""

    def __init__(self, base: Path, config: dict, snakefile: Path = SNAKEFILE):
        self.base, self.work, self.results = base, base / "work", base / "results"
        self.reference = base / "reference"
        self.config = {**config, "output_dir": str(self.results)}
        self.snakefile = snakefile

    def command(self, *args: str) -> list[str]:
        return snakemake_command(self.work, self.config, *args, snakefile=self.snakefile)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        """Snakemake to the end (or ``args``, e.g. ``--unlock``)."""
        return subprocess.run(self.command(*args), capture_output=True, text=True,
                              timeout=900, env=SNAKEMAKE_ENV)  # fmt: skip

    def make_reference(self) -> subprocess.CompletedProcess:
        """One uninterrupted run, moved to ``reference`` (its durations in ``benchmarks/``)."""
        self.clean()
        done = self.run()
        if done.returncode == 0:
            shutil.rmtree(self.reference, ignore_errors=True)
            self.results.rename(self.reference)
        return done

    def clean(self) -> None:
        """Start from nothing: no results, no Snakemake metadata."""
        for folder in (self.results, self.work):
            shutil.rmtree(folder, ignore_errors=True)

    def kill_at(
        self, points: list[KillPoint], by_a_run: bool = False, poll: float = 0.05
    ) -> Attempt:
        """Start the run in its own session, SIGKILL its process group at the first of
        ``points`` it reaches, then clear both locks as a user would (:meth:`unlock`)."""
        started = time.time()
        log = self.base / "attempt.log"
        with open(log, "w") as output:
            process = subprocess.Popen(
                self.command(),
                env=SNAKEMAKE_ENV,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        reached = None
        while process.poll() is None and reached is None:
            time.sleep(poll)
            reached = next((point for point in points
                            if self.started_jobs(STAGES[point.stage], started) >= point.n),
                           None)  # fmt: skip
        if reached is not None and process.poll() is None:
            time.sleep(reached.delay)
        landed = self.running_rules() if process.poll() is None else None
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        files = {name: (self.results / name).stat().st_mtime_ns
                 for name in output_files(self.results)}  # fmt: skip
        left = len(find_leftovers(self.results))
        self.unlock(by_a_run)
        started_jobs = Counter(RULE_LINE.findall(log.read_text()))
        return Attempt(reached, landed, started_jobs, files, left)

    def unlock(self, by_a_run: bool = False) -> None:
        """Snakemake's lock (``--unlock``), then the output folder's, which outlives the
        killed run (unless killed before taking it): the next run stops with the message
        checked here (by a run if ``by_a_run``, else by the lock's own code, which that run
        calls), whose ``rm`` is then done, the killed run's jobs being gone."""
        unlocked = self.run("--unlock")
        assert unlocked.returncode == 0, unlocked.stderr[-2000:]
        lock = lock_path(self.results)
        if not lock.exists():
            return
        if by_a_run:
            stopped = self.run()
            message = stopped.stderr if stopped.returncode else ""
        else:
            try:
                acquire(self.results, self.work)
            except OutputLocked as error:
                message = str(error)
            else:
                message = ""
        assert "a run that is gone" in message and f"rm {lock}" in message, message[-2000:]
        lock.unlink()

    def started_jobs(self, rule: str, since: float) -> int:
        """How many jobs of ``rule`` opened their log since ``since`` (seconds since the epoch)."""
        count = 0
        for pattern in log_patterns(rule):
            for path in self.results.glob(pattern):
                try:
                    count += path.stat().st_mtime >= since
                except FileNotFoundError:
                    continue
        return count

    def running_rules(self) -> list[str]:
        """The rules of the outputs Snakemake marks incomplete now (jobs running)."""
        folder = self.work / ".snakemake" / "incomplete"
        markers = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
        # a marker's name is the output's path in URL-safe base64, cut into folders of
        # 254 characters each prefixed with @ when longer (snakemake/persistence/file.py)
        names = ["".join(part.lstrip("@") for part in p.relative_to(folder).parts) for p in markers]
        outputs = [base64.urlsafe_b64decode(name).decode() for name in names]
        return sorted({rule_of(output, self.results) for output in outputs})

    def resume(self) -> Counter:
        """Run to the end; return the jobs it ran, rule -> count."""
        done = self.run()
        assert done.returncode == 0, done.stderr[-3000:]
        return Counter(RULE_LINE.findall(done.stdout + done.stderr))

    def sequence(self, points: list[KillPoint]) -> Outcome:
        """From nothing: kill at the first of ``points`` the run reaches, resume, kill at the
        first of the others it reaches, and so on; then resume to the end and compare with
        the reference. The first kill's output lock is met by a real run, the others' by
        the lock's code."""
        self.clean()
        attempts, remaining = [], list(points)
        while remaining:
            attempts.append(self.kill_at(remaining, by_a_run=not attempts))
            if attempts[-1].point is None:  # the run ended before any
                break
            remaining.remove(attempts[-1].point)
        rerun = self.resume()
        return Outcome(attempts, remaining, rerun, compare_trees(self.reference, self.results),
                       find_leftovers(self.results))  # fmt: skip


def log_patterns(rule: str) -> list[str]:
    """Where ``rule``'s jobs write their logs, relative to ``output_dir`` (a set's folder
    under ``rounds/<name>/`` too)."""
    if rule == "sets_summary":
        return ["rounds/summary.log"]
    own = [f"logs/{rule}.log", f"logs/{rule}/*.log", f"logs/{rule}/*/*.log"]
    return own + [f"rounds/*/{pattern}" for pattern in own]


def rule_of(output: str, results: Path) -> str:
    """The rule that writes ``output`` (a path under ``results``), read off its folder; else
    the path itself."""
    if not Path(output).is_relative_to(results):
        return output
    relative = Path(output).relative_to(results).as_posix()
    relative = re.sub(r"^rounds/[^/]+/", "", relative)
    relative = re.sub(r"^(global|local)/moving_lowres_aligned/", "view/", relative)
    for prefix, rule in (("deform/blocks/", "deform_block"),
                         ("transform/field_regions/", "stitch_field"),
                         ("transform/inverse_field_regions/", "invert_field"),
                         ("aligned/blocks/", "resample_block"),
                         ("aligned/levels/", "downsample_aligned"),
                         ("aligned/complete.json", "finalize_aligned"),
                         ("view/blocks/", "lowres_view_block"),
                         ("view/complete.json", "finalize_lowres_view"),
                         ("qc/", "qc_report"),
                         ("rounds/summary", "sets_summary")):  # fmt: skip
        if relative.startswith(prefix):
            return rule
    return relative


def compare_trees(reference: Path, result: Path) -> list[str]:
    """Every difference between two output folders (files present in one only, and files
    whose bytes differ; JSON compared as data less :data:`VOLATILE`), empty if identical."""
    ours, theirs = output_files(reference), output_files(result)
    differences = [f"only in the reference: {name}" for name in sorted(ours - theirs)]
    differences += [f"only in the resumed run: {name}" for name in sorted(theirs - ours)]
    for name in sorted(ours & theirs):
        a, b = (reference / name).read_bytes(), (result / name).read_bytes()
        if a != b and not same_but_volatile(name, a, b):
            differences.append(f"differs: {name}")
    return differences


def output_files(folder: Path) -> set[str]:
    """Every file under ``folder`` (relative, POSIX), less :data:`SKIPPED` folders, logs,
    :data:`UNCOMPARED` and the output folder's lock."""
    files = set()
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if (
            path.is_dir()
            or relative.name == LOCK_NAME
            or relative.suffix == ".log"
            or set(relative.parts) & set(SKIPPED)
            or relative.as_posix() in UNCOMPARED
        ):
            continue  # fmt: skip
        files.add(relative.as_posix())
    return files


def same_but_volatile(name: str, a: bytes, b: bytes) -> bool:
    """Whether two versions of file ``name`` (JSON or TSV) are equal once the fields or
    columns of :data:`VOLATILE` are dropped (other files: never)."""

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not VOLATILE.fullmatch(k)}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    def columns(text: bytes) -> list[list[str]]:
        rows = list(csv.reader(io.StringIO(text.decode()), delimiter="\t"))
        kept = [i for i, column in enumerate(rows[0]) if not VOLATILE.fullmatch(column)]
        return [[row[i] for i in kept] for row in rows]

    if name.endswith(".json"):
        return strip(json.loads(a)) == strip(json.loads(b))
    if name.endswith(".tsv"):
        return columns(a) == columns(b)
    return False


def stage_durations(reference: Path) -> dict[str, float]:
    """Mean seconds of one job of each stage in the reference run (its benchmark files)."""
    durations = {}
    for stage, rule in STAGES.items():
        files = [*reference.glob(f"**/benchmarks/{rule}/**/*.tsv"),
                 *reference.glob(f"**/benchmarks/{rule}.tsv")]  # fmt: skip
        seconds = [float(path.read_text().splitlines()[1].split("\t")[0]) for path in files]
        if seconds:
            durations[stage] = sum(seconds) / len(seconds)
    return durations


def stage_jobs(reference: Path) -> dict[str, int]:
    """How many jobs of each stage the reference run ran (its log files)."""
    jobs = {stage: sum(len(list(reference.glob(p))) for p in log_patterns(rule))
            for stage, rule in STAGES.items()}  # fmt: skip
    return {stage: n for stage, n in jobs.items() if n}
