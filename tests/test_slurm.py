"""The workflow submitted to a real SLURM (the one-node cluster of .ci/slurm-up.sh).

Skipped where no SLURM answers, unless BSW_REQUIRE_SLURM=1 (as in CI), which
turns a missing cluster into a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from bigstream_workflow.output_lock import LOCK_NAME
from tests.conftest import (
    SNAKEMAKE_ENV,
    demo_config,
    digest,
    pair_config,
    run_snakemake,
    snakemake_command,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]


def slurm_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module", autouse=True)
def slurm():
    if not slurm_answers():
        if os.environ.get("BSW_REQUIRE_SLURM") == "1":
            pytest.fail("BSW_REQUIRE_SLURM=1 but no SLURM answers: run .ci/slurm-up.sh")
        pytest.skip("no SLURM here (.ci/slurm-up.sh starts a one-node cluster)")


def cluster_config(pair, results) -> dict:
    """The demo's parameters with fewer, larger tiles: a group job runs its members one after
    another on the CI node, so its time grows with their number; each stage still has 2
    tiles."""
    config = pair_config(pair, results, **demo_config())
    config["local_affine"]["enabled"] = False  # fewer DAG layers (each costs status polls)
    config["global_affine"]["blocksize"] = [40, 80, 80]
    config["deform"]["blocksize"] = [40, 160, 160]
    config["resample"]["blocksize"] = [80, 160, 80]
    return config


@pytest.fixture(scope="module")
def slurm_run(deformed_pair, tmp_path_factory):
    """One whole run through sbatch in which SLURM cancels a running deform job (as an
    admin's ``scancel`` or a preemption would): its folder, config and log."""
    work = tmp_path_factory.mktemp("slurm")
    config = cluster_config(deformed_pair, work / "results")
    command = snakemake_command(work, config, profile="slurm-ci")
    with (work / "snakemake.log").open("w") as output:
        process = subprocess.Popen(command, env=SNAKEMAKE_ENV, stdout=output,
                                   stderr=subprocess.STDOUT)  # fmt: skip
        jobs = wait_for_running(process, "deform")
        subprocess.run(["scancel", *jobs], check=True, timeout=30)
        returncode = process.wait(timeout=900)
    log = (work / "snakemake.log").read_text()
    assert returncode == 0, log[-4000:]
    return work, config, log


def test_the_workflow_runs_through_sbatch_in_groups(slurm_run):
    tmp_path, _, log = slurm_run
    accuracy = json.loads((tmp_path / "results" / "qc" / "accuracy.json").read_text())
    assert accuracy["transform"] == "global affine + deformation"
    assert accuracy["mean_um"] < 0.4
    # jobs really went through sbatch, tile jobs bundled in groups
    slurm_logs = tmp_path / ".snakemake" / "slurm_logs"
    for group in ("keypoints", "global_fit", "deform_blocks", "field_regions"):
        assert any(slurm_logs.glob(f"group_{group}*/*.log")), sorted(slurm_logs.rglob("*"))
    assert any((slurm_logs / "rule_finalize_aligned").rglob("*.log"))  # an ungrouped rule
    assert "has been submitted with SLURM jobid" in log
    assert (tmp_path / "results" / "aligned" / "complete.json").exists()


def test_a_failing_job_fails_the_run_and_names_rule_and_log(tiny_pair, tmp_path):
    config = pair_config(tiny_pair, tmp_path / "results")
    result = run_snakemake(tmp_path, config, profile="slurm-ci", timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode != 0
    # the tiny pair's cells are too small for the default radii: matching fails, and the
    # output names the rule, its log, and why (retried once, as the profile says)
    assert "Error in rule match_keypoints" in log
    assert "GlobalAffineError: fixed image: 0 key points found" in log
    assert "logs/match_keypoints.log" in log
    assert not (tmp_path / "results" / "global" / "matches.parquet").exists()


def running_jobs(word: str) -> list[str]:
    """Ids of this cluster's RUNNING jobs whose name or comment mentions ``word``."""
    listing = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i|%j|%k"],
                             capture_output=True, text=True, timeout=30).stdout  # fmt: skip
    return [line.split("|")[0] for line in listing.splitlines() if word in line]


def wait_for_running(process: subprocess.Popen, word: str, timeout: float = 600) -> list[str]:
    """Wait until a SLURM job mentioning ``word`` runs while ``process`` (Snakemake) lives."""
    deadline = time.monotonic() + timeout
    while not (jobs := running_jobs(word)):
        assert process.poll() is None, f"Snakemake ended before a {word} job ran"
        assert time.monotonic() < deadline, f"no {word} job ran within {timeout} s"
        time.sleep(0.5)
    return jobs


def deform_memory(log: str) -> dict[str, list[int]]:
    """mem_mb asked for each deform block, attempt after attempt, from Snakemake's job lines."""
    asked: dict[str, list[int]] = {}
    job = re.compile(r"rule deform_block:.*?wildcards: batch=(\w+).*?mem_mb=(\d+)", re.DOTALL)
    for tile, mem_mb in job.findall(log):
        asked.setdefault(tile, []).append(int(mem_mb))
    return asked


def test_a_cancelled_job_is_retried_with_more_memory(slurm_run):
    _, _, log = slurm_run
    assert "Trying to restart job" in log
    retried = {tile: asked for tile, asked in deform_memory(log).items() if len(asked) > 1}
    assert retried, deform_memory(log)
    for asked in retried.values():
        assert asked[1] > asked[0]  # the retry asks for more memory


def global_outputs(results: Path) -> dict[str, int]:
    """The global affine's files under ``results`` (key points, matches, affines, reports;
    not its low-res preview image, which may still be in flight): modification times, ns."""
    files = (path for path in (results / "global").rglob("*") if path.is_file())
    return {str(path.relative_to(results)): path.stat().st_mtime_ns for path in files
            if not any(part.endswith(".ome.zarr") for part in path.parts)}  # fmt: skip


def test_a_killed_controller_resumes_without_redoing_finished_tiles(slurm_run):
    """Last in this module: it reuses ``slurm_run``'s folder (its global stage is finished
    there), removes everything from the deformation on, and kills the controller of the run
    that makes them again while deform blocks are in flight."""
    work, config, _ = slurm_run
    results = work / "results"
    field = Path("results", "transform", "field.zarr")
    aligned = Path("results", "aligned.ome.zarr")
    first = {"field": digest(work / field), "aligned": digest(work / aligned, "0")}
    for name in ("deform", "transform", "aligned", "aligned.ome.zarr", "qc"):
        shutil.rmtree(results / name)
    # what this test compares (not the QC report and accuracy jobs after them)
    targets = [str(results / name) for name in ("transform/field.json", "aligned/complete.json")]
    finished = global_outputs(results)
    command = snakemake_command(work, config, *targets, profile="slurm-ci")
    process = subprocess.Popen(command, env=SNAKEMAKE_ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for_running(process, "deform")  # deform blocks in flight
    process.kill()  # the controller dies; what it submitted stays with SLURM
    process.wait()
    subprocess.run(["scancel", "-u", os.environ.get("USER", "root")], timeout=30)
    assert not (results / "aligned" / "complete.json").exists()
    assert run_snakemake(work, config, "--unlock").returncode == 0
    (results / LOCK_NAME).unlink()  # the dead controller's output_dir lock, its jobs cancelled
    result = run_snakemake(work, config, *targets, profile="slurm-ci", timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "rule fit_global_affine:" not in log and "rule detect_keypoints:" not in log
    assert "rule deform_block:" in log and not any((results / "deform" / "blocks").glob("*.tmp*"))
    assert global_outputs(results) == finished  # not written again
    # the same bytes as the first run (which had a job cancelled and retried)
    assert digest(work / field) == first["field"]
    assert digest(work / aligned, "0") == first["aligned"]
