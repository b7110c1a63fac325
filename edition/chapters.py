"""Which files are chapters, each read as a notebook, and the fingerprint of its code cells."""

from __future__ import annotations

import hashlib
from pathlib import Path

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


def is_chapter(md: Path) -> bool:
    """A chapter is a MyST Markdown notebook: front matter with a jupytext ``kernelspec``."""
    text = md.read_text(encoding="utf-8")
    return text.startswith("---") and "kernelspec:" in text.split("\n---", 1)[0]


def _all_chapters(book: Path) -> list[Path]:
    return [
        md
        for md in sorted(book.rglob("*.md"))
        if not any(part.startswith(("_", ".")) for part in md.relative_to(book).parts) and is_chapter(md)
    ]


def chapters(book: Path = BOOK) -> list[Path]:
    """Every English chapter under ``book`` (sub-folders included; ``_`` and hidden folders such as
    ``.ipynb_checkpoints`` and the Chinese edition ``zh/`` excluded), sorted. These are the chapters
    that run: a translation has the same code cells (:mod:`edition.languages`)."""
    return [md for md in _all_chapters(book) if md.relative_to(book).parts[0] != "zh"]


def translations(book: Path = BOOK) -> list[Path]:
    """Every chapter of the Chinese edition (``book/zh/``), sorted."""
    return [md for md in _all_chapters(book) if md.relative_to(book).parts[0] == "zh"]


def chapter_id(md: Path, book: Path = BOOK) -> str:
    """The chapter's name relative to ``book`` without suffix: ``three_modes``, ``zh/three_modes``."""
    return md.resolve().relative_to(book.resolve()).with_suffix("").as_posix()


def read_notebook(md: Path) -> nbformat.NotebookNode:
    """The chapter as a notebook (jupytext's MyST reader), without outputs."""
    return nbformat.reads(jupytext.writes(jupytext.read(md), fmt="ipynb"), as_version=4)


def code_sources(nb: nbformat.NotebookNode) -> list[str]:
    """The source of every code cell, in order, with trailing white space removed."""
    return [cell.source.rstrip() for cell in nb.cells if cell.cell_type == "code"]


def code_fingerprint(sources: list[str]) -> str:
    """SHA-256 of the code cells: any change to any code cell, or to their order, changes it."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.encode("utf-8"))
        digest.update(b"\n\x00cell\x00\n")
    return digest.hexdigest()
