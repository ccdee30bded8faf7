"""One run per output folder: a second run on a locked output_dir stops at once, naming the
owner; a lock whose owner is gone is reported with the command that clears it, not cleared."""

import json
import socket
import subprocess
import sys
import time

import pytest

from bigstream_workflow.output_lock import LOCK_NAME, OutputLocked, acquire, release
from tests.conftest import deploy, pair_config, run_snakemake


def test_a_second_acquire_names_the_owner_and_release_frees_it(tmp_path):
    path = acquire(tmp_path / "out", tmp_path / "work")
    owner = json.loads(path.read_text())
    assert owner["workdir"] == str(tmp_path / "work") and owner["pid"] > 0
    with pytest.raises(
        OutputLocked, match=rf"is in use by another run \(host .*pid {owner['pid']}"
    ):
        acquire(tmp_path / "out", tmp_path / "elsewhere")
    release(path, owner["pid"])
    assert not path.exists()
    release(acquire(tmp_path / "out", tmp_path / "work"), owner["pid"])  # free again


def test_a_lock_whose_owner_is_gone_is_reported_with_the_command_and_kept(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    path = acquire(tmp_path / "out", tmp_path / "work")
    owner = json.loads(path.read_text())
    path.write_text(json.dumps({**owner, "pid": gone.pid}))
    with pytest.raises(OutputLocked, match=rf"was locked by a run that is gone .* rm {path}$"):
        acquire(tmp_path / "out", tmp_path / "work")
    assert json.loads(path.read_text())["pid"] == gone.pid  # never cleared silently


@pytest.mark.slow
def test_a_second_snakemake_on_the_same_output_dir_stops_within_seconds(tiny_pair, tmp_path):
    """A run from another working directory (a deployment) on an output_dir that a live run
    holds stops before its first job, in under 10 s, with the owner's details; a dry run
    is not stopped; a real run leaves no lock behind."""
    out = tmp_path / "out"
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        out.mkdir()
        lock = out / LOCK_NAME
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": owner.pid,
                                    "started": "earlier", "workdir": "/labs/alice",
                                    "command": "snakemake ..."}))  # fmt: skip
        config = pair_config(tiny_pair, out, deform={"enabled": False},
                             local_affine={"enabled": False})  # fmt: skip
        work = tmp_path / "bob"
        start = time.monotonic()
        dry = run_snakemake(work, config, "--dry-run", snakefile=deploy(work))
        dry_took = time.monotonic() - start
        assert dry.returncode == 0, dry.stderr[-2000:]
        start = time.monotonic()
        second = run_snakemake(work, config, snakefile=deploy(work))
        took = time.monotonic() - start
        print(f"locked run stopped after {took:.1f} s (a dry run: {dry_took:.1f} s)")
        # it stops where a dry run ends (Snakemake's start-up: ~3 s here with SLURM up, ~11 s
        # where the slurm plugin's `scontrol show config` probe waits for a controller)
        assert second.returncode != 0 and took < max(10, dry_took + 3), second.stderr[-2000:]
        message = second.stdout + second.stderr
        assert "is in use by another run (host" in message and f"pid {owner.pid}" in message
        assert "/labs/alice" in message and not (out / "plan").exists()
    finally:
        owner.kill()
        owner.wait()
    lock.unlink()
    done = run_snakemake(work, config, "plan", snakefile=deploy(work))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "plan" / "images.json").exists() and not lock.exists()
