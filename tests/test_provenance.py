"""A rule's code digest covers its script and the modules of ours it reaches, and only those:
editing a module re-runs the rules that use it, not every rule."""

from pathlib import Path

from bigstream_workflow.provenance import _import_closure, script_digest

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
