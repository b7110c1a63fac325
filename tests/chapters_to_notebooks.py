"""Turn every chapter under book/ (MyST Markdown notebooks) into an .ipynb for nbval.

Usage: python tests/chapters_to_notebooks.py OUT_DIR

A chapter is any book/**/*.md whose front matter has a jupytext ``kernelspec``; a chapter added
later is picked up without touching this script or the Makefile. The notebooks are written
next to nothing of the book: OUT_DIR is emptied first, so a removed chapter is not run again.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]


def chapters(book: Path = ROOT / "book") -> list[Path]:
    """Every MyST notebook under ``book``, sorted."""
    found = []
    for md in sorted(book.rglob("*.md")):
        head = md.read_text(encoding="utf-8").split("\n---", 1)[0]
        if md.read_text(encoding="utf-8").startswith("---") and "kernelspec:" in head:
            found.append(md)
    return found


def main(out: str) -> int:
    out_dir = Path(out)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    for md in chapters():
        nb = jupytext.read(md)
        target = out_dir / md.relative_to(ROOT / "book").with_suffix(".ipynb")
        target.parent.mkdir(parents=True, exist_ok=True)
        jupytext.write(nb, target)
        print(f"{md.relative_to(ROOT)} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "_build" / "nbval")))
