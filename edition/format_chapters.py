"""Format the chapters' code cells with ruff, to the 88 columns the website shows.

Usage: python -m edition.format_chapters [--check] [CHAPTER.md ...]

Each ``{code-cell}`` block of a MyST Markdown chapter is formatted on its own (as a one-cell
notebook, so ruff keeps a trailing ``;`` that hides a cell's output and leaves magics alone);
the markdown around it and the cell's options (``:tags:``) are left as they are. ``--check``
changes nothing and lists the cells that would change and the code lines still wider than 88
columns (a long string, which no formatter splits), exit status 1 if there are any.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from .chapters import ROOT, chapters

WIDTH = 88
CELL = re.compile(r"(^```\{code-cell\}[^\n]*\n)((?::[^\n]*\n)*)(.*?)(^```[ \t]*$)", re.S | re.M)


def ruff_format(code: str) -> str:
    """``code`` as ruff formats it at :data:`WIDTH` columns (the package's style)."""
    cell = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": code}
    notebook = {"cells": [cell], "metadata": {"language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ruff"),
            "format",
            f"--line-length={WIDTH}",
            "--stdin-filename=cell.ipynb",
            "-",
        ],
        input=json.dumps(notebook),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ValueError(done.stderr.strip())
    source = json.loads(done.stdout)["cells"][0]["source"]
    return ("".join(source) if isinstance(source, list) else source).rstrip("\n") + "\n"


def format_chapter(md: Path) -> tuple[str, int]:
    """The chapter's text with every code cell formatted, and how many cells changed."""
    text, changed = md.read_text(encoding="utf-8"), 0

    def one(match: re.Match) -> str:
        nonlocal changed
        head, options, code, fence = match.groups()
        formatted = ruff_format(code) if code.strip() else code
        changed += formatted != code
        return head + options + formatted + fence

    return CELL.sub(one, text), changed


def wide_lines(text: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of every code-cell line wider than :data:`WIDTH` columns."""
    wide = []
    for match in CELL.finditer(text):
        first = text.count("\n", 0, match.start(3)) + 1
        wide += [(first + i, line) for i, line in enumerate(match.group(3).splitlines()) if len(line) > WIDTH]
    return wide


def main(argv: list[str]) -> int:
    check = "--check" in argv
    paths = [Path(a) for a in argv if a != "--check"] or chapters()
    problems = 0
    for md in paths:
        text, changed = format_chapter(md)
        if changed and not check:
            md.write_text(text, encoding="utf-8")
        wide = wide_lines(text)
        problems += (changed if check else 0) + len(wide)
        name = md.resolve().relative_to(ROOT)
        if changed:
            print(f"{name}: {changed} code cells {'would be ' if check else ''}reformatted")
        for line_no, line in wide:
            print(f"{name}:{line_no}: {len(line)} columns: {line.strip()[:60]}...")
    return 1 if check and problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
