"""Turn every chapter under book/ (MyST Markdown notebooks) into an .ipynb for nbval.

Usage: python tools/chapters_to_notebooks.py OUT_DIR

A chapter is any book/**/*.md whose front matter has a jupytext ``kernelspec`` (outside ``_``
folders such as the stored reference edition, see ``edition.chapters``); a chapter added later
is picked up without touching this script or the Makefile. The notebooks are written next to
nothing of the book: OUT_DIR is emptied first, so a removed chapter is not run again.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import jupytext

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from edition.chapters import chapters  # noqa: E402  (one definition of "a chapter", shared with the build)


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
