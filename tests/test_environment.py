"""workflow/envs/bigstream.yaml (what the rules declare) carries the same pins as pyproject.toml."""

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]


def pyproject_pins() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {
        Requirement(dep).name.lower(): Requirement(dep).specifier for dep in project["dependencies"]
    }
    pins["python"] = SpecifierSet(project["requires-python"])
    return pins


def conda_pins() -> dict[str, SpecifierSet]:
    env = yaml.safe_load((ROOT / "workflow" / "envs" / "bigstream.yaml").read_text())
    pins = {}
    for entry in env["dependencies"]:
        assert isinstance(entry, str), f"unexpected non-conda entry {entry!r}"
        name, _, spec = entry.partition(" ")
        pins[name.lower()] = SpecifierSet(spec.replace(" ", ""))
    return pins


def test_conda_env_has_the_same_pins_as_pyproject():
    assert conda_pins() == pyproject_pins()


def test_every_rule_declares_the_environment():
    rules = sorted((ROOT / "workflow" / "rules").glob("*.smk"))
    for path in rules:
        text = path.read_text()
        n_rules = text.count("\nrule ") + text.startswith("rule ")
        assert text.count('conda:\n        "../envs/bigstream.yaml"') == n_rules, path.name
