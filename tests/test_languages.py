"""The two editions: every page has its Chinese counterpart, with the same code cells, so they cannot drift."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from edition import languages  # noqa: E402
from edition.chapters import BOOK, chapters, translations  # noqa: E402

CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")
HAN = re.compile(r"[\u4e00-\u9fff]")


def _prose(text: str) -> str:
    """A page without its front matter, code cells, fenced blocks, inline code and math."""
    text = languages.CODE_CELL.sub("", text[len(languages.front_matter(text)) :])
    text = re.sub(r"^```.*?^```$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`]*`|\$[^$]*\$", "", text)


def test_every_page_has_its_counterpart_in_the_other_language():
    assert languages.missing_counterparts() == []
    assert [md.name for md in translations()] == [md.name for md in chapters()]


@pytest.mark.parametrize("md", translations(), ids=lambda md: md.stem)
def test_a_chinese_chapter_has_the_english_code_cells(md: Path):
    assert languages.code_drift(md) == [], "Fix: python -m edition.languages (copies the English code cells)"


def test_code_drift_is_found_and_synced(tmp_path: Path):
    book = tmp_path / "book"
    (book / "zh").mkdir(parents=True)
    english = "---\nkernelspec:\n  name: python3\n---\n# T\n\nText.\n\n```{code-cell} ipython3\nx = 1\n```\n"
    (book / "ch.md").write_text(english, encoding="utf-8")
    chinese = book / "zh" / "ch.md"
    chinese.write_text(english.replace("Text.", "正文。").replace("x = 1", "x = 2"), encoding="utf-8")
    assert languages.code_drift(chinese, book) == ["code cell 1 differs"]
    assert languages.sync_code(chinese, book) is True
    assert languages.code_drift(chinese, book) == [] and "正文。" in chinese.read_text(encoding="utf-8")
    chinese.write_text(chinese.read_text(encoding="utf-8") + "\n```{code-cell} ipython3\ny = 1\n```\n")
    assert languages.code_drift(chinese, book) == ["2 code cells, the English chapter has 1"]
    with pytest.raises(ValueError, match="translate the change"):
        languages.sync_code(chinese, book)


def test_counterparts_and_the_switch():
    assert languages.counterpart("book/three_modes") == "book/zh/three_modes"
    assert languages.counterpart("book/zh/three_modes") == "book/three_modes"
    assert languages.language("book/zh/intro") == "zh" and languages.language("book/intro") == "en"
    assert "[中文](zh/intro.md)" in languages.switch_block("book/intro")
    assert "[English](../intro.md)" in languages.switch_block("book/zh/intro")


def test_a_page_without_counterpart_is_named(tmp_path: Path):
    (tmp_path / "book" / "zh").mkdir(parents=True)
    for name in ("book/intro", "book/a", "book/zh/intro", "book/zh/b"):
        (tmp_path / f"{name}.md").write_text("# x\n")
    toc = "root: book/intro\nparts:\n  - chapters:\n      - file: book/a\n      - file: book/zh/intro\n"
    (tmp_path / "_toc.yml").write_text(toc + "        sections:\n          - file: book/zh/b\n")
    assert languages.missing_counterparts(tmp_path) == [
        "book/a.md has no counterpart: book/zh/a.md must exist and be listed in _toc.yml",
        "book/zh/b.md has no counterpart: book/b.md must exist and be listed in _toc.yml",
    ]


def _zh_pages() -> list[Path]:
    return sorted((BOOK / "zh").glob("*.md"))


@pytest.mark.parametrize("md", _zh_pages(), ids=lambda md: md.stem)
def test_a_chinese_page_is_written_in_chinese_and_cites_the_chinese_bibliography(md: Path):
    text = md.read_text(encoding="utf-8")
    prose = _prose(text)
    letters = [c for c in prose if c.isalpha()]
    assert len(HAN.findall(prose)) > 0.4 * len(letters), f"{md.name}: most of the prose is not Chinese"
    keys = [key.strip() for group in CITE.findall(text) for key in group.split(",")]
    assert all(key.startswith("zh-") for key in keys), f"{md.name}: cite zh-KEY, not KEY (the Chinese bibliography)"
    english = (BOOK / md.name).read_text(encoding="utf-8")
    en_keys = [key.strip() for group in CITE.findall(english) for key in group.split(",")]
    assert sorted(set(keys)) == sorted({f"zh-{key}" for key in en_keys}), f"{md.name}: other sources than English"


def test_english_pages_cite_the_english_bibliography():
    for md in BOOK.glob("*.md"):
        keys = [key.strip() for group in CITE.findall(md.read_text(encoding="utf-8")) for key in group.split(",")]
        assert not any(key.startswith("zh-") for key in keys), md.name


@pytest.mark.parametrize("md", translations(), ids=lambda md: md.stem)
def test_a_chinese_chapter_ends_with_exercises_and_collapsed_hints(md: Path):
    text = md.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings and headings[-1].strip() == "练习", f"{md.name} does not end with ## 练习"
    english = (BOOK / md.name).read_text(encoding="utf-8")
    en_headings = re.findall(r"^#{1,3} ", _prose(english), re.M)
    assert len(re.findall(r"^#{1,3} ", _prose(text), re.M)) == len(en_headings), (
        f"{md.name}: other sections than English"
    )
    hints = len(re.findall(r"^:::\{admonition\} 提示\n:class: dropdown$", text, re.M))
    assert hints == len(re.findall(r"^:::\{admonition\} Hint\n:class: dropdown$", english, re.M)), md.name


def test_the_chinese_api_page_documents_the_same_modules_without_indexing_them_twice():
    english = (BOOK / "api.md").read_text(encoding="utf-8")
    chinese = (BOOK / "zh" / "api.md").read_text(encoding="utf-8")
    documented = r"^\.\. (?:automodule|autodata):: (\S+)$"  # every object Sphinx indexes
    modules = re.findall(documented, english, re.M)
    assert re.findall(documented, chinese, re.M) == modules
    assert len(re.findall(r"^   :no-index:$", chinese, re.M)) == len(modules)
    assert ":keyprefix: zh-" in (BOOK / "zh" / "bibliography.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["alexnet", "first_transfer", "vgg16_objects", "mnist_mobilenet"])
def test_corrections_of_common_chinese_tutorial_claims_are_boxed(name: str):
    """The claims common in Chinese tutorials that the book corrects stand in a 常见误解勘正 box."""
    text = (BOOK / "zh" / f"{name}.md").read_text(encoding="utf-8")
    assert re.search(r"^:::\{admonition\} 常见误解勘正$", text, re.M), f"zh/{name}.md has no 常见误解勘正 box"
