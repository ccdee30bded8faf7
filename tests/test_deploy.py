"""The workflow as a lab deploys it (`snakedeploy deploy-workflow`): our Snakefile loaded
as a module of a Snakefile in another folder, ``use rule * from ...``. Here the plans of
each kind of run; tests/test_workflow.py runs the demo's pair through such a deployment."""

from __future__ import annotations

import pytest

from tests.conftest import deploy, pair_config, run_snakemake


def grouped_rules(stdout: str) -> set[str]:
    """The rules a dry run lists inside group jobs (indented under the group)."""
    return {line.strip() for line in stdout.splitlines() if line.startswith("    rule ")}


@pytest.mark.parametrize("kind", ["single", "rounds", "sweep"])
def test_a_deployment_in_another_folder_plans_every_kind_of_run(tiny_pair, tmp_path, kind):
    """Every file the workflow reads (defaults, schema, scripts, reports, the per-set module)
    is found from its own Snakefile, not from the folder the lab runs in; the sets of rounds
    and sweeps (modules of the module) and the SLURM profile's bundles come along."""
    lab = tmp_path / "lab"
    config = pair_config(tiny_pair, "results")  # relative: inside the lab's folder
    if kind == "single":
        spots = tmp_path / "spots.csv"
        spots.write_text("z,y,x\n10.0,20.0,20.0\n")
        config["points"] = [{"path": str(spots), "space": "moving"}]
    elif kind == "rounds":
        # two rounds of different images (one the fixed image itself: a plan is all this asks)
        config["rounds"] = [{"name": "r2"}, {"name": "r3", "path": str(tiny_pair / "fixed.n5")}]
    else:
        sweep = tmp_path / "sweep.tsv"
        sweep.write_text("global_affine.match_threshold\n0.6\n0.7\n")
        config["sweep"] = str(sweep)
    result = run_snakemake(lab, config, "--dry-run", profile="slurm", snakefile=deploy(lab))
    assert result.returncode == 0, result.stderr[-3000:]
    sets = {"single": [""], "rounds": ["set0_", "set1_"], "sweep": ["set0_", "set1_"]}[kind]
    grouped = grouped_rules(result.stdout)
    for prefix in sets:
        for name in ("fit_local_affine", "deform_block", "resample_block"):
            assert f"rule {prefix}{name}:" in grouped, (prefix, name)
    if kind == "single":
        assert "invert_field" in result.stdout and "warp_points" in result.stdout
    else:
        assert "sets_summary" in result.stdout
    assert not (lab / "results").exists()  # a dry run writes nothing
