#!/usr/bin/env python3
"""Set-up and the two everyday commands, for a fresh clone with only Python 3.11 and pip.

    python3 tasks.py demo    # build the environment, write the synthetic pair, run the workflow
    python3 tasks.py test    # build the environment, lint (+ snakemake --lint), run the tests

The environment is a virtualenv in ``.venv`` (made and updated on demand: it is
reinstalled whenever pyproject.toml changes). Extra arguments after ``test`` go
to pytest; after ``demo`` to snakemake.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".installed-pyproject-sha256"
DEMO_DATA = ROOT / "demo_output" / "data"
# The demo pair: a global affine plus a smooth deformation of up to 4 µm.
DEMO_PAIR = ("--preset", "small", "--deform-um", "4")
# .test/: the configs `snakemake --lint` checks (one run, rounds, a sweep), on a tiny pair
TEST_DATA = ROOT / ".test" / "data"
LINTED = ("single", "rounds", "sweep")


def run(*command: str | Path) -> None:
    """Run a command in the repository root; stop with its exit code if it fails."""
    printable = " ".join(str(part) for part in command)
    print(f"+ {printable}", flush=True)
    result = subprocess.run([str(part) for part in command], cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f"command failed with exit code {result.returncode}: {printable}")


def ensure_environment() -> None:
    """Create .venv and install the project (dev tools, cluster plugins) unless current."""
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    start = time.monotonic()
    if not (BIN / "python").exists():
        run(sys.executable, "-m", "venv", VENV)
    run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", ".[dev,cluster]")
    STAMP.write_text(wanted + "\n")
    print(f"environment ready in {time.monotonic() - start:.0f} s: {VENV}", flush=True)


def demo(extra: list[str]) -> None:
    """Write the synthetic pair (once) and run the whole workflow on it with profiles/local."""
    ensure_environment()
    if not (DEMO_DATA / "truth.json").exists():
        run(BIN / "python", "-m", "bigstream_core.phantom", DEMO_DATA, *DEMO_PAIR)
    run(
        BIN / "snakemake", *extra, "--profile", "profiles/local", "--configfile", "config/demo.yaml"
    )


def lint() -> None:
    """ruff, snakefmt, and ``snakemake --lint`` on every .test config (it must find nothing)."""
    run(BIN / "ruff", "check", ".")
    run(BIN / "ruff", "format", "--check", ".")
    run(BIN / "snakefmt", "--check", "workflow")
    if not (TEST_DATA / "truth.json").exists():
        run(BIN / "python", "-m", "bigstream_core.phantom", TEST_DATA, "--preset", "tiny")
    for name in LINTED:
        run(BIN / "snakemake", "--lint", "--configfile", f".test/{name}/config.yaml")


def test(extra: list[str]) -> None:
    """Lint (ruff, snakefmt, snakemake --lint) and run the whole test suite."""
    ensure_environment()
    lint()
    # two workers (this project's machines have 2 cores): the SLURM tests, which mostly wait
    # for the cluster's status polls, run beside the others; a module's tests that share a
    # session fixture (tests marked xdist_group) stay on one worker
    run(BIN / "python", "-m", "pytest", "-n", "2", "--dist", "loadgroup", *extra)


def main() -> None:
    commands = {"demo": demo, "test": test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
