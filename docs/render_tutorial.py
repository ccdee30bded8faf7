"""Render docs/tutorial.py (a jupytext "percent" script) as docs/tutorial.md.

    python docs/render_tutorial.py           # write docs/tutorial.md
    python docs/render_tutorial.py --check   # exit 1 if docs/tutorial.md is out of date

Markdown cells (``# %% [markdown]``) lose their leading ``# ``; code cells (``# %%``)
become fenced ``python`` blocks. Nothing is run: the figures the page shows are the ones
the script writes into docs/figures/ when it runs. tests/test_tutorial.py checks that the
page is the rendering of the script, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
SCRIPT, PAGE = DOCS / "tutorial.py", DOCS / "tutorial.md"
HEADER = (
    "<!-- Rendered from docs/tutorial.py by docs/render_tutorial.py: edit the script, "
    "then run `python docs/render_tutorial.py`. -->"
)


def cells(script: str) -> list[tuple[str, str]]:
    """The script's cells in order, as (kind, source) with kind "markdown" or "code"."""
    found: list[tuple[str, list[str]]] = []
    for line in script.splitlines():
        if line.startswith("# %%"):
            kind = "markdown" if line.strip() == "# %% [markdown]" else "code"
            found.append((kind, []))
        elif found:
            found[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"text before the first cell marker: {line!r}")
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in found]


def markdown_text(source: str) -> str:
    """A markdown cell's text: each line without its comment sign."""
    lines = []
    for line in source.splitlines():
        if line != "#" and not line.startswith("# "):
            raise ValueError(f"a markdown cell line is not a comment: {line!r}")
        lines.append(line[2:])
    return "\n".join(lines)


def render(script: str) -> str:
    """The markdown page of a percent script."""
    parts = [HEADER]
    for kind, source in cells(script):
        if not source:
            continue
        parts.append(markdown_text(source) if kind == "markdown" else f"```python\n{source}\n```")
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the page is current")
    args = parser.parse_args(argv)
    page = render(SCRIPT.read_text(encoding="utf-8"))
    if args.check:
        current = PAGE.exists() and PAGE.read_text(encoding="utf-8") == page
        if not current:
            print(f"{PAGE} is not the rendering of {SCRIPT}: run python docs/render_tutorial.py")
        return 0 if current else 1
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
