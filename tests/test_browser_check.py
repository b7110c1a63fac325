"""The browser check finds what it claims to find (needs Debian's chromium; skipped without it)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))  # the checks live in tools/
import browser_check  # noqa: E402

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium)")

PNG = Path(__file__).resolve().parents[1] / "book" / "figures" / "logo.svg"


def test_finds_tracebacks_broken_links_and_missing_images(tmp_path: Path):
    site = tmp_path / "html"
    (site / "book").mkdir(parents=True)
    shutil.copy(PNG, site / "book" / "logo.svg")
    (site / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/good.html" />')
    switch = '<div class="tlbook-lang docutils container"><p><a href="{}">other language</a></p></div>'
    (site / "book" / "zh").mkdir()
    (site / "book" / "zh" / "good.html").write_text(
        '<html lang="zh-CN"><meta charset="utf-8"><body><h1>好</h1>'
        + switch.format("../good.html")
        + "<p>"
        + "文字 " * 400
        + "</p></body></html>"
    )
    (site / "book" / "good.html").write_text(
        '<html lang="en"><body><h1 id="top">Fine</h1>'
        + switch.format("zh/good.html")
        + '<a href="bad.html">bad</a><a href="#top">up</a>'
        '<a href="https://colab.research.google.com/github/o/r/blob/main/notebooks/first_transfer.ipynb">Colab</a>'
        '<a href="https://mybinder.org/v2/gh/o/r/main?urlpath=lab/tree/notebooks/first_transfer.ipynb">Binder</a>'
        '<div class="admonition warning tlbook-provenance">Executed in ...</div><div class="cell docutils container">x</div>'
        '<img src="logo.svg" width="200"><p>' + "text " * 400 + "</p></body></html>"
    )
    (site / "book" / "bad.html").write_text(
        '<html><body><div class="cell docutils container"><div class="cell_output"><pre>Traceback (most recent call last):\nValueError: boom</pre></div></div>'
        '<a href="missing.html">gone</a><a href="#nowhere">anchor</a><img src="missing.png"></body></html>'
    )
    shots = tmp_path / "shots"
    shots.mkdir()
    server, base = browser_check._serve(site)
    try:
        problems = {
            page.name: browser_check.check_page(CHROMIUM, site, base, page, shots, str(tmp_path / "profile"))
            for page in browser_check.pages(site)
        }
    finally:
        server.shutdown()
    assert problems["index.html"] == [] and problems["good.html"] == [], problems
    bad = " | ".join(problems["bad.html"])
    assert '<html lang="en"> missing' in bad and "no language switch to book/zh/bad.html" in bad
    assert "Traceback" in bad and "broken link missing.html" in bad and "missing image missing.png" in bad
    assert "#nowhere" in bad and "no provenance header" in bad
    assert (shots / "book__good.png").stat().st_size > 5000


def test_launch_buttons_must_open_notebooks_that_exist():
    colab = "https://colab.research.google.com/github/o/r/blob/main/{}"
    binder = "https://mybinder.org/v2/gh/o/r/main?urlpath=lab/tree/{}"
    good = [colab.format("notebooks/first_transfer.ipynb"), binder.format("notebooks/first_transfer.ipynb")]
    assert browser_check.launch_problems(good, is_chapter=True) == []
    markdown = [colab.format("book/first_transfer.md"), binder.format("notebooks/missing.ipynb")]
    assert browser_check.launch_problems(markdown, is_chapter=True) == [
        "the Colab button opens book/first_transfer.md, which is not a notebook in the repository",
        "the Binder button opens notebooks/missing.ipynb, which is not a notebook in the repository",
    ]
    assert browser_check.launch_problems([], is_chapter=True) == ["no Colab button", "no Binder button"]
    assert browser_check.launch_problems([], is_chapter=False) == []


def test_language_rules():
    dom = '<html lang="zh-CN"><div class="tlbook-lang docutils container"><a href="../x.html">English</a></div>'
    assert browser_check.language_problems("book/zh/x.html", dom) == []
    assert browser_check.language_problems("book/zh/y.html", dom) == ["no language switch to book/y.html"]
    assert browser_check.language_problems("book/x.html", dom) == [
        '<html lang="en"> missing',
        "no language switch to book/zh/x.html",
    ]


def test_missing_glyphs_are_found(tmp_path: Path):
    """Private-use code points have a glyph in no font: they are drawn as one and the same box."""
    (tmp_path / "zh.html").write_text(
        '<html lang="zh-CN"><meta charset="utf-8"><body><p>' + "迁移学习卷积池化" * 20 + "</p></body></html>"
    )
    server, base = browser_check._serve(tmp_path)
    try:
        assert browser_check.glyph_problems(CHROMIUM, base + "zh.html") == []
        missing = browser_check.glyph_problems(CHROMIUM, base + "zh.html", chars="\ue000\ue001\ue002")
    finally:
        server.shutdown()
    assert len(missing) == 1 and missing[0].startswith("missing glyphs: 3 characters drew 1 distinct shapes")
