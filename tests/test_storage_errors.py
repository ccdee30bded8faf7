"""Storage errors (disk full, no permission): one clear line naming the path and the job, the
traceback in the log only, and retries that do not ask for more memory."""

import errno
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bigstream_core.atomic import atomic_path
from bigstream_workflow.retries import (
    clear_records,
    record_storage_failure,
    resource_attempt,
    resource_attempts,
    storage_failures,
)
from bigstream_workflow.storage_errors import storage_error, storage_message

ROOT = Path(__file__).resolve().parents[1]


def test_storage_errors_are_found_in_the_chain_of_causes_others_are_not():
    full = OSError(errno.ENOSPC, "No space left on device", "/out/a.zarr/c/0/0/0")
    try:
        try:
            raise full
        except OSError as error:
            raise RuntimeError("zarr could not write") from error
    except RuntimeError as wrapped:
        assert storage_error(wrapped) is full
    assert storage_error(FileNotFoundError(errno.ENOENT, "No such file", "/in.n5")) is None
    assert storage_error(ValueError("bad")) is None


def test_the_line_names_the_path_the_job_and_what_to_do(tmp_path):
    denied = OSError(errno.EACCES, "Permission denied", str(tmp_path / "plan" / "x.json"))
    assert storage_message(denied, "rule plan", ["ignored"]) == (
        f"bigstream-workflow: permission denied on {tmp_path}/plan/x.json (rule plan): give "
        f"your user access to {tmp_path} (read, write, enter) or move output_dir, then re-run"
    )
    # a write error names no file: the job's outputs are named instead
    full = OSError(errno.ENOSPC, "No space left on device")
    line = storage_message(full, "rule resample_block, batch z0_y0_x1", [str(tmp_path / "a")])
    assert line.startswith(
        f"bigstream-workflow: disk full writing {tmp_path}/a (rule resample_block, batch "
        "z0_y0_x1): free space (or inodes) on the filesystem at /"
    )
    assert line.endswith("or move output_dir, then re-run") and "free of" in line


def test_an_atomic_write_that_fails_names_its_output(tmp_path):
    # a real ENOSPC: /dev/full refuses every write, and a write error carries no file name
    with pytest.raises(OSError) as caught:
        with atomic_path(tmp_path / "table.parquet"), open("/dev/full", "wb") as device:
            device.write(b"x" * 100_000)
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(tmp_path / "table.parquet")
    assert os.listdir(tmp_path) == []  # nothing left behind


SCRIPT = """
import errno, types
from bigstream_workflow.logs import configure

snakemake = types.SimpleNamespace(
    log=[{log!r}], rule="resample_block", wildcards=types.SimpleNamespace(
        items=lambda: {{"batch": "z0_y0_x1"}}.items()), output=["out/blocks/z0_y0_x1.json"])
log = configure(snakemake)
log.info("resampling batch z0_y0_x1")
with open("/dev/full", "wb") as device:  # a real ENOSPC, with no file name
    device.write(b"x" * 100_000)
"""


def run_script(tmp_path, log):
    """Run a script as Snakemake runs a rule's (a `snakemake` object, then configure), in
    ``tmp_path``; it fails on a full disk."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SCRIPT.format(log=str(log))))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip


def test_a_script_on_a_full_disk_says_one_line_and_records_the_attempt(tmp_path):
    log = tmp_path / "job.log"
    done = run_script(tmp_path, log)
    assert done.returncode == 1
    line = (
        "bigstream-workflow: disk full writing out/blocks/z0_y0_x1.json (rule resample_block, "
        "batch z0_y0_x1): free space (or inodes) on the filesystem at "
    )
    errors = [entry for entry in done.stderr.splitlines() if "INFO" not in entry]
    assert len(errors) == 1 and errors[0].startswith(line), done.stderr  # no traceback
    logged = log.read_text().splitlines()
    assert logged[0] == errors[0]  # the log starts with the line
    assert "resampling batch z0_y0_x1" in logged[1]  # then what the job logged
    assert "Traceback (most recent call last):" in logged and logged[-1].startswith("OSError")
    records = tmp_path / ".snakemake" / "bigstream-storage-failures"
    assert storage_failures("resample_block", {"batch": "z0_y0_x1"}, records) == 1


def test_a_log_that_cannot_be_written_is_the_line_on_stderr(tmp_path):
    log = Path("/sys/bigstream-workflow-test.log")
    try:  # root writes anywhere but in a read-only /sys (as in this project's containers)
        open(log, "w").close()
        pytest.skip(f"{log} is writable here")
    except OSError as error:
        if storage_error(error) is None:
            pytest.skip(f"{log}: {error} (not a storage error)")
    done = run_script(tmp_path, log)
    assert done.returncode == 1
    assert done.stderr.startswith(f"bigstream-workflow: permission denied on {log} "), done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_a_log_that_fills_its_disk_is_one_more_line_not_a_logging_error_per_record(tmp_path):
    done = run_script(tmp_path, "/dev/full")  # opens, and every write is a real ENOSPC
    assert done.returncode == 1
    errors = [entry for entry in done.stderr.splitlines() if "INFO" not in entry]
    assert [entry.split(" (rule")[0] for entry in errors] == [
        "bigstream-workflow: disk full writing /dev/full",
        "bigstream-workflow: disk full writing out/blocks/z0_y0_x1.json",
    ], done.stderr
    assert Path("/dev/full").is_char_device()  # the log was not rewritten


def test_retries_after_storage_failures_keep_the_first_attempts_resources(tmp_path):
    records = tmp_path / "records"
    job = {"table": "pts"}
    assert resource_attempt("warp_points", job, 2, records) == 2  # no record: a memory kill
    assert record_storage_failure("warp_points", job, records)
    assert resource_attempt("warp_points", job, 2, records) == 1
    # other jobs (another rule, wildcards that extend this job's) are not this one
    assert resource_attempt("warp_points", {"table": "pts.csv"}, 2, records) == 2
    assert resource_attempt("stitch_points", job, 2, records) == 2
    # attempt 2 killed for memory (no record), attempt 3 asks for twice the memory
    assert resource_attempt("warp_points", job, 3, records) == 2
    clear_records(records)  # a new run
    assert resource_attempt("warp_points", job, 2, records) == 2 and records.is_dir()


def test_a_decorated_resource_function_gets_the_attempt_that_sizes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # records live in the working directory's .snakemake/

    @resource_attempts
    def mem_mb(wildcards, attempt):
        """A job's memory."""
        return 1000 * attempt

    class Wildcards(dict):
        pass

    assert record_storage_failure("deform_block", {"batch": "z0_y0_x0"})
    assert mem_mb(Wildcards(batch="z0_y0_x0"), 2, "deform_block") == 1000
    assert mem_mb(Wildcards(batch="z0_y0_x1"), 2, "deform_block") == 2000
    assert mem_mb.__doc__ == "A job's memory."


@pytest.fixture
def full_keypoint_folder(tmp_path):
    """``<output_dir>/global/keypoints/fixed`` on a 64 kB tmpfs filled to the last byte: a
    real full disk where the first key point job writes (output_dir is ``tmp_path/out``)."""
    folder = tmp_path / "out" / "global" / "keypoints" / "fixed"
    folder.mkdir(parents=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                                 capture_output=True, text=True)  # fmt: skip
    except FileNotFoundError:
        pytest.skip("no `mount` command to make a full filesystem")
    if mounted.returncode != 0:
        pytest.skip(f"making a full filesystem needs mount privileges: {mounted.stderr.strip()}")
    try:
        with open(folder / "filler", "wb", buffering=0) as filler, pytest.raises(OSError) as full:
            while True:
                filler.write(b"\0" * 4096)
        assert full.value.errno == errno.ENOSPC
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
def test_a_job_on_a_full_disk_says_one_line_and_its_retry_asks_for_the_same_memory(
    tmp_path, tiny_pair, full_keypoint_folder
):
    from tests.conftest import pair_config, run_snakemake

    target = full_keypoint_folder / "z0_y0_x0.parquet"
    config = pair_config(tiny_pair, tmp_path / "out")
    done = run_snakemake(tmp_path / "work", config, "--retries", "1", str(target))
    assert done.returncode == 1
    line = (
        f"bigstream-workflow: disk full writing {target} (rule detect_keypoints, image fixed, "
        f"tile z0_y0_x0): free space (or inodes) on the filesystem at {full_keypoint_folder} "
        "(0 B free of 65.5 kB) or move output_dir, then re-run"
    )
    # each attempt: Snakemake's job header (its resources last), the line, Snakemake's error
    attempts = done.stderr.split("localrule detect_keypoints:")[1:]
    assert len(attempts) == 2 and "Trying to restart job" in attempts[0], done.stderr
    resources = []
    for attempt in attempts:
        header, _, rest = attempt.partition("\n    resources: ")
        resources.append(rest.partition("\n")[0])
        assert rest.partition("\n")[2].startswith(f"{line}\nRuleException:"), done.stderr
    assert "mem_mb=" in resources[0] and resources[1] == resources[0]  # not twice the memory
    logged = tmp_path / "out" / "logs" / "detect_keypoints" / "fixed" / "z0_y0_x0.log"
    logged = logged.read_text().splitlines()
    assert logged[0] == line and "Traceback (most recent call last):" in logged


def test_every_resource_function_of_the_attempt_skips_storage_failures():
    rules = ROOT / "workflow" / "rules"
    for path in rules.glob("*.smk"):
        text = path.read_text()
        assert not re.search(r"lambda[^:]*\battempt\b", text), path  # undecorated
        for match in re.finditer(r"^def \w+\([^)]*\battempt\b", text, re.M):
            assert text[: match.start()].endswith("@resource_attempts\n"), match.group()
