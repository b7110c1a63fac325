"""Launchable notebooks for Colab and Binder, generated from the chapters (never edited by hand).

Usage: python -m edition.notebooks [--check]

Every chapter ``book/NAME.md`` becomes ``notebooks/NAME.ipynb`` (and its Chinese translation
``book/zh/NAME.md``, ``notebooks/zh/NAME.ipynb``): the same cells, without
outputs, after one extra first cell. That cell does nothing where the companion is installed
(``make lab``, Binder); in a fresh Colab runtime it clones the book's repository, installs the
companion with its ``[book]`` extra and moves into the repository's ``book/`` folder, so the
chapter runs as it does locally. It is tagged ``remove-cell``, so a website built from the
notebooks would not show it. Colab opens them on a GPU runtime, where the default profile is
``full``. The website's Colab and Binder buttons point at these files (:mod:`edition.sphinx_ext`).
``--check`` writes nothing and exits 1 when a notebook is missing or differs from its chapter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import yaml

from .chapters import BOOK, ROOT, chapter_id, chapters, read_notebook, translations

NOTEBOOKS = ROOT / "notebooks"


def repository() -> tuple[str, str]:
    """``(url, branch)`` of the book's repository, from ``_config.yml``."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))["repository"]
    return config["url"].rstrip("/"), config.get("branch", "main")


def install_cell(url: str, branch: str) -> nbformat.NotebookNode:
    """The first cell: fetch the repository and install the companion where it is missing."""
    source = f"""# In Colab (or any Python without the companion): fetch the book, install its companion and
# run from the book's folder. Elsewhere this cell does nothing. The profile follows the hardware
# (full on a GPU runtime, quick on a CPU); to choose: %env TLBOOK_PROFILE=quick
try:
    import companion
except ImportError:
    import os
    import subprocess
    import sys

    if not os.path.isdir("tlbook"):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{branch}", "{url}", "tlbook"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "./tlbook[book]"], check=True)
    os.chdir("tlbook/book")"""
    return nbformat.v4.new_code_cell(source, metadata={"tags": ["remove-cell"]})


def launchable(md: Path) -> str:
    """``notebooks/NAME.ipynb`` for chapter ``md``, as text."""
    nb = read_notebook(md)
    url, branch = repository()
    nb.cells.insert(0, install_cell(url, branch))
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index}"  # stable ids: regenerating gives the same file
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": [], "gpuType": "T4"},
    }
    return json.dumps(nbformat.from_dict(nb), indent=1, ensure_ascii=False) + "\n"


def target(md: Path) -> Path:
    return NOTEBOOKS / f"{chapter_id(md, BOOK)}.ipynb"


def launchable_chapters() -> list[Path]:
    """The chapters of both editions: each has a launchable notebook."""
    return chapters() + translations()


def stale() -> list[Path]:
    """Chapters whose notebook is missing or out of date."""
    return [
        md
        for md in launchable_chapters()
        if not target(md).exists() or target(md).read_text(encoding="utf-8") != launchable(md)
    ]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        out_of_date = stale()
        for md in out_of_date:
            print(f"{target(md).relative_to(ROOT)} is out of date with {md.relative_to(ROOT)}")
        if out_of_date:
            print("Fix: python -m edition.notebooks")
        return 1 if out_of_date else 0
    for md in launchable_chapters():
        target(md).parent.mkdir(parents=True, exist_ok=True)
        target(md).write_text(launchable(md), encoding="utf-8")
    print(f"{len(launchable_chapters())} notebooks in {NOTEBOOKS.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
