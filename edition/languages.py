"""The book's two editions: English pages in ``book/``, Chinese ones in ``book/zh/`` under the same names.

A Chinese chapter has the English chapter's code cells, character for character and in order
(``tests/test_languages.py``), so it needs no run of its own: the website shows it with the outputs
of the English chapter's execution (the same code cells give the same key in the build's execution
cache, :mod:`edition.sphinx_ext`), and nbval runs the code once, through the English chapter.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from .chapters import BOOK, ROOT

ZH = "zh"
HTML_LANG = {"en": "en", ZH: "zh-CN"}
SWITCH_CLASS = "tlbook-lang"


def language(docname: str) -> str:
    """``"zh"`` for ``book/zh/...`` pages, ``"en"`` for the other pages under ``book/``."""
    return ZH if docname.startswith(f"book/{ZH}/") else "en"


def counterpart(docname: str) -> str:
    """The same page in the other language: ``book/x`` <-> ``book/zh/x``."""
    if language(docname) == ZH:
        return "book/" + docname.removeprefix(f"book/{ZH}/")
    return f"book/{ZH}/" + docname.removeprefix("book/")


def english_source(md: Path, book: Path = BOOK) -> Path:
    """The English chapter a Chinese one translates (``md`` itself when it is English)."""
    relative = md.resolve().relative_to(book.resolve())
    return book / Path(*relative.parts[1:]) if relative.parts[0] == ZH else md


def toc_docnames(root: Path = ROOT) -> list[str]:
    """Every page of ``_toc.yml`` (root, chapters and sections), in reading order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    names = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            names.append(entry["file"])
            walk(entry.get("sections", []))

    walk(toc.get("chapters", []) + toc.get("sections", []))  # a book without parts, an article
    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    return names


def missing_counterparts(root: Path = ROOT) -> list[str]:
    """A sentence for each book page, in either language, whose counterpart is absent from the
    table of contents or from the disk; empty when both editions match page for page."""
    listed = [name for name in toc_docnames(root) if name.startswith("book/")]
    problems = []
    for name in listed:
        other = counterpart(name)
        if other not in listed or not (root / f"{other}.md").exists():
            problems.append(f"{name}.md has no counterpart: {other}.md must exist and be listed in _toc.yml")
    return problems


def switch_block(docname: str) -> str:
    """MyST Markdown for the language switch under a page's title: a link to the counterpart."""
    name = Path(counterpart(docname)).name
    if language(docname) == "en":
        line = f"**English** · [中文]({ZH}/{name}.md)"
    else:
        line = f"[English](../{name}.md) · **中文**"
    return f"```{{container}} {SWITCH_CLASS}\n{line}\n```\n"


CODE_CELL = re.compile(r"^```\{code-cell\}.*?^```$", re.M | re.S)


def front_matter(text: str) -> str:
    """The ``---`` block at the top of a MyST notebook (jupytext and kernel), or ``""``."""
    if not text.startswith("---"):
        return ""
    end = text.find("\n---", 3)
    return text[: end + 4] if end != -1 else ""


def _texts_and_cells(translation: Path, book: Path) -> tuple[str, str, list[str], list[str]]:
    """The English and Chinese texts of a chapter and the code cells of each."""
    english = english_source(translation, book).read_text(encoding="utf-8")
    chinese = translation.read_text(encoding="utf-8")
    return english, chinese, CODE_CELL.findall(english), CODE_CELL.findall(chinese)


def code_drift(translation: Path, book: Path = BOOK) -> list[str]:
    """How a Chinese chapter's code differs from its English chapter's: a sentence per difference
    (front matter, number of code cells, each differing cell with its options); empty when none."""
    english, chinese, en_cells, zh_cells = _texts_and_cells(translation, book)
    problems = [] if front_matter(english) == front_matter(chinese) else ["the front matter differs"]
    if len(en_cells) != len(zh_cells):
        problems.append(f"{len(zh_cells)} code cells, the English chapter has {len(en_cells)}")
    problems += [f"code cell {i} differs" for i, (a, b) in enumerate(zip(en_cells, zh_cells), 1) if a != b]
    return problems


def sync_code(translation: Path, book: Path = BOOK) -> bool:
    """Copy the English chapter's front matter and code cells, in order, into its translation (the
    prose stays); ``True`` when the file changed. Refuses when the number of cells differs: then the
    translation needs a translator, not a copy."""
    english, chinese, en_cells, zh_cells = _texts_and_cells(translation, book)
    if len(en_cells) != len(zh_cells):
        raise ValueError(f"{translation}: {len(zh_cells)} code cells, {len(en_cells)} in English: translate the change")
    cells = iter(en_cells)
    synced = CODE_CELL.sub(lambda _: next(cells), chinese)
    synced = front_matter(english) + synced[len(front_matter(synced)) :]
    if synced != chinese:
        translation.write_text(synced, encoding="utf-8")
    return synced != chinese


def main(argv: list[str]) -> int:
    """``python -m edition.languages [--check]``: copy English code cells into the Chinese chapters
    (after an edit of the English code), or with ``--check`` list every drift and exit 1."""
    from .chapters import translations

    if "--check" in argv:
        drift = [f"{md.relative_to(ROOT)}: {p}" for md in translations() for p in code_drift(md)]
        drift += missing_counterparts()
        print("\n".join(drift) or "both editions match")
        return 1 if drift else 0
    changed = [md for md in translations() if sync_code(md)]
    print(f"{len(changed)} Chinese chapters took the English code cells: {', '.join(md.stem for md in changed) or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
