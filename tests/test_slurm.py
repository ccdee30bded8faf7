"""The workflow submitted to a real SLURM (the one-node cluster of .ci/slurm-up.sh).

Skipped where no SLURM answers, unless BSW_REQUIRE_SLURM=1 (as in CI), which
turns a missing cluster into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import demo_config, pair_config, run_snakemake

pytestmark = pytest.mark.slow


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


def test_the_workflow_runs_through_sbatch_in_groups(deformed_pair, tmp_path):
    config = pair_config(deformed_pair, tmp_path / "results", **demo_config())
    # Fewer, larger tiles than the demo: a group job runs its members one after another on
    # the CI node, so its time grows with their number; each stage still has 2 tiles.
    config["local_affine"]["enabled"] = False  # fewer DAG layers (each costs status polls)
    config["global_affine"]["blocksize"] = [40, 80, 80]
    config["deform"]["blocksize"] = [40, 160, 160]
    config["resample"]["blocksize"] = [80, 160, 80]
    result = run_snakemake(tmp_path, config, profile="slurm-ci", timeout=900)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    accuracy = json.loads((tmp_path / "results" / "qc" / "accuracy.json").read_text())
    assert accuracy["transform"] == "global affine + deformation"
    assert accuracy["mean_um"] < 0.4
    # jobs really went through sbatch, tile jobs bundled in groups
    slurm_logs = tmp_path / ".snakemake" / "slurm_logs"
    for group in ("keypoints", "deform_blocks", "field_regions"):
        assert any(slurm_logs.glob(f"group_{group}*/*.log")), sorted(slurm_logs.rglob("*"))
    assert any(slurm_logs.glob("rule_match_keypoints/*.log"))
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
