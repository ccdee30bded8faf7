"""A rule's code digest covers its script and the modules of ours it reaches, and only those:
editing a module re-runs the rules that use it, not every rule."""

import shutil
from pathlib import Path

import pytest

from bigstream_core.io import open_image, write_n5
from bigstream_workflow.provenance import _import_closure, script_digest
from tests.conftest import pair_config, run_snakemake

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "workflow" / "scripts"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_closure_follows_imports_anywhere_in_a_module_and_nothing_else(tmp_path):
    write(tmp_path / "bigstream_core" / "__init__.py", "")
    write(
        tmp_path / "bigstream_core" / "io" / "__init__.py", "from bigstream_core.io.base import x\n"
    )
    write(tmp_path / "bigstream_core" / "io" / "base.py", "import numpy\n")
    write(tmp_path / "bigstream_core" / "a.py", "def f():\n    from bigstream_core import b\n")
    write(tmp_path / "bigstream_core" / "b.py", "import os\n")
    write(tmp_path / "bigstream_core" / "unused.py", "")
    write(tmp_path / "bigstream_workflow" / "__init__.py", "")
    write(tmp_path / "bigstream_workflow" / "c.py", "from bigstream_core.io import x\n")
    first = write(tmp_path / "scripts" / "first.py", "from bigstream_core.a import f\n")
    second = write(tmp_path / "scripts" / "second.py", "import bigstream_workflow.c\n")
    names = {
        script.name: {p.relative_to(tmp_path).as_posix() for p in _import_closure(script, tmp_path)}
        for script in (first, second)
    }
    assert names["first.py"] == {"scripts/first.py", "bigstream_core/__init__.py",
                                 "bigstream_core/a.py", "bigstream_core/b.py"}  # fmt: skip
    assert names["second.py"] == {
        "scripts/second.py", "bigstream_workflow/__init__.py", "bigstream_workflow/c.py",
        "bigstream_core/__init__.py", "bigstream_core/io/__init__.py", "bigstream_core/io/base.py",
    }  # fmt: skip


def test_the_rules_scripts_reach_the_modules_they_use_and_not_the_others():
    deform = {p.name for p in _import_closure(SCRIPTS / "deform_block.py", ROOT)}
    report = {p.name for p in _import_closure(SCRIPTS / "collect_deform_report.py", ROOT)}
    assert {"deform.py", "tiling.py", "transform_files.py"} <= deform
    assert "deform.py" not in report and "resample.py" not in report
    digests = {script_digest(str(path)) for path in SCRIPTS.glob("*.py")}
    assert len(digests) == len(list(SCRIPTS.glob("*.py")))  # each script its own digest


@pytest.mark.slow
def test_an_image_rewritten_at_the_same_path_reruns_what_reads_it(tiny_pair, tmp_path):
    """The plan (and every job that reads the images) carries their fingerprints: rewriting
    the moving image in place (its metadata rewritten) makes them out of date."""
    pair = tmp_path / "pair"
    shutil.copytree(tiny_pair, pair)
    config = pair_config(pair, tmp_path / "out")
    work = tmp_path / "work"
    assert run_snakemake(work, config, "plan").returncode == 0
    again = run_snakemake(work, config, "plan", "--dry-run")
    assert "Nothing to be done" in again.stdout + again.stderr
    image = open_image(pair / "moving.n5", "highres")
    write_n5(image.read((slice(None),) * 3), pair / "moving.n5", "highres", image.spacing)
    stale = run_snakemake(work, config, "plan", "--dry-run")
    log = stale.stdout + stale.stderr
    assert stale.returncode == 0 and "rule plan:" in log and "params" in log.lower(), log[-2000:]
