"""The published edition: stored reference runs, fresh vs stale, headers and banners, and a real build.

The chapter used here is a tiny MyST notebook in a temporary book; it is executed for real by
``edition.run`` (a kernel, the companion imported), so the stored reference is what ``make
reference`` writes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edition import banner, chapters, run, status, store, times  # noqa: E402

CHAPTER = """---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
---

# A tiny chapter

Some prose.

```{code-cell} ipython3
print("answer", 6 * 7)
```

More prose.

```{code-cell} ipython3
import companion

holds = companion.profiles.get_profile().check("two times 21 is 42", 2 * 21 == 42, value="42")
```
"""


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A book with one chapter and its reference run (smoke), as ``make reference`` stores it."""
    book_root = tmp_path_factory.mktemp("tinybook")
    book = book_root / "book"
    book.mkdir()
    (book / "tiny.md").write_text(CHAPTER)
    prov = run.run_chapter(book / "tiny.md", "smoke", timeout=120, reference_dir=book / "_reference", book=book)
    return book_root, prov


def _copy(stored, tmp_path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(stored[0], root)
    return root


def test_reference_records_its_run(stored):
    root, prov = stored
    nb, loaded = store.load(root / "book" / "_reference" / "tiny.ipynb")
    assert loaded == prov and prov["chapter"] == "tiny" and prov["profile"] == "smoke"
    assert prov["device"].startswith(("cpu", "cuda", "mps")) and prov["torch"] and prov["seconds"] > 0
    assert prov["companion_files"] == store.companion_files()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert [o["text"] for o in outputs] == ["answer 42\n", "[claim] two times 21 is 42 (42): holds\n"]  # no probe cell
    assert len([c for c in nb.cells if c.cell_type == "code"]) == 2  # the chapter's two cells, no probe


HERMETIC = """---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
---

# Writes, then looks for what an earlier run wrote

```{code-cell} ipython3
import os
from companion import data

marker = data.work_root() / "runs" / "marker.txt"
print("found an earlier run" if marker.exists() else "started empty")
marker.parent.mkdir(parents=True, exist_ok=True)
marker.write_text("written by a run")
print("offline:", os.environ["TLBOOK_OFFLINE"])
```
"""


def test_a_second_reference_run_does_not_read_what_the_first_wrote(tmp_path, monkeypatch):
    book = tmp_path / "book"
    book.mkdir()
    (book / "writes.md").write_text(HERMETIC)
    shared = tmp_path / "shared-work"  # what a reader's default TLBOOK_WORK would be
    monkeypatch.setenv("TLBOOK_WORK", str(shared))
    outputs = []
    for _ in range(2):
        run.run_chapter(book / "writes.md", "smoke", timeout=120, reference_dir=book / "_reference", book=book)
        nb, _ = store.load(book / "_reference" / "writes.ipynb")
        code = next(c for c in nb.cells if c.cell_type == "code")
        outputs.append("".join(o.get("text", "") for o in code.outputs))
    assert all(out.startswith("started empty\n") for out in outputs), outputs
    assert all(out.split("offline: ")[1].strip() in ("0", "1") for out in outputs)
    assert not shared.exists()  # each run wrote into its own folder, removed afterwards


def test_fresh_until_the_code_changes(stored, tmp_path):
    root = _copy(stored, tmp_path)
    md = root / "book" / "tiny.md"
    check = lambda: status.chapter_status(md, root / "book" / "_reference", root / "book")  # noqa: E731
    assert check().state == "fresh" and check().changed_companion == ()
    md.write_text(CHAPTER.replace("Some prose.", "Other, better prose."))
    assert check().fresh, "prose edits keep the reference"
    md.write_text(CHAPTER.replace("6 * 7", "6 * 9"))
    stale = check()
    assert stale.state == "stale" and "code changed" in stale.reason and stale.provenance["chapter"] == "tiny"
    md.write_text(CHAPTER.replace("```\n\nMore", "```\n\n```{code-cell} ipython3\nprint(1)\n```\n\nMore"))
    assert check().state == "stale", "an added code cell counts"
    (root / "book" / "_reference" / "tiny.ipynb").unlink()
    assert check().state == "missing"


def test_a_changed_companion_is_named_or_strict(stored, tmp_path):
    root = _copy(stored, tmp_path)
    md, refs, book = root / "book" / "tiny.md", root / "book" / "_reference", root / "book"
    companion = dict(store.companion_files(), **{"train.py": "edited"})
    lenient = status.chapter_status(md, refs, book, companion, strict=False)
    assert lenient.fresh and lenient.changed_companion == ("train.py",)
    assert "train.py" in banner.reference_header(lenient.provenance, lenient.changed_companion)
    strict = status.chapter_status(md, refs, book, companion, strict=True)
    assert strict.state == "stale" and "train.py" in strict.reason


@pytest.mark.parametrize(
    "content, expected",
    [(b"\x89PNG\r\n\x1a\n\x00garbage", "cannot be read"), (b'{"cells": [', "cannot be read"), (None, "no provenance")],
)
def test_an_unreadable_reference_is_a_clear_error(stored, tmp_path, content, expected):
    root = _copy(stored, tmp_path)
    path = root / "book" / "_reference" / "tiny.ipynb"
    if content is None:
        nb = nbformat.read(path, as_version=4)
        del nb.metadata[store.KEY]
        nbformat.write(nb, path)
    else:
        path.write_bytes(content)
    with pytest.raises(store.ReferenceError) as error:
        status.chapter_status(root / "book" / "tiny.md", path.parent, root / "book")
    message = str(error.value)
    assert expected in message and str(path) in message and "make reference CHAPTER=tiny" in message
    assert "\n" not in message


# The provenance of a quick run on a CPU, as edition.run records it.
CPU_RUN = {
    "profile": "quick",
    "profile_summary": "profile 'quick': 100 train",
    "device": "cpu (x86_64, 2 threads), fp32",
    "gpu": None,
    "torch": "2.14.1",
    "commit": "0123456789abcdef",
    "dirty": False,
    "date": "2026-11-23T15:00:00+00:00",
    "seconds": 312.4,
}


def test_headers_say_what_ran_where():
    prov = dict(CPU_RUN)
    cpu = banner.reference_header(prov)
    assert "the CPU edition" in cpu and "published edition" in cpu and "5 min 12 s" in cpu and "0123456789" in cpu
    assert banner.CSS_CLASS in cpu and ":class: note" in cpu and "{ref}`full-size`" in cpu
    assert "pending" not in cpu and "the performance appendix" in banner.reference_header(prov, link=False)
    gpu = banner.reference_header(dict(prov, profile="full", gpu="NVIDIA H100", device="cuda:0 (NVIDIA H100)"))
    assert "reference run on NVIDIA H100" in gpu and "pending" not in gpu and "CPU edition" not in gpu
    claims = banner.reference_header(
        dict(prov, claims=["probe >= 0.85 (0.812): not checked in 'quick' (applies in full)"])
    )
    assert "Claims of the text checked by this run: probe >= 0.85 (0.812): not checked in 'quick'" in claims


def _english_words(text: str) -> list[str]:
    """Latin-letter words of ``text`` outside code spans, roles and the claims list, less the names
    a Chinese sentence keeps as they are."""
    text = re.sub(r"`[^`]*`|\{ref\}|:class: .*|:::\{admonition\}", "", text)
    text = re.sub(r"（照原样列出英文输出.*?）：.*?。", "", text)
    keep = {"torch", "fp32", "CPU", "GPU", "x86_64", "companion"}
    return [w for w in re.findall(r"[A-Za-z][A-Za-z_0-9]+", text) if w not in keep]


def test_the_chinese_header_has_no_english_sentence():
    prov = dict(
        CPU_RUN,
        profile_summary="profile 'quick': 50 train / 50 validation / 100 test images per class, 4 epochs, "
        "96 px, batch 32",
        seconds=436.4,
        claims=["transfer beats scratch by 10 points (0.793 vs 0.543): holds"],
    )
    zh = banner.reference_header(prov, lang="zh")
    assert "7 分 16 秒" in zh and "每类训练图像 50 张、验证图像 50 张、测试图像 100 张，训练 4 轮" in zh
    assert "CPU（x86_64，2 个线程），fp32" in zh and "{ref}`zh-full-size`" in zh
    assert _english_words(zh) == [], zh
    assert _english_words(banner.reference_header(dict(prov, claims=[]), lang="zh")) == []
    assert _english_words(banner.reference_header(prov, lang="en")) != []  # the check can fail


def test_the_run_records_the_claims_the_chapter_checked(stored):
    assert stored[1]["claims"] == ["two times 21 is 42 (42): holds"]


def test_the_header_goes_under_the_title():
    text = banner.insert_under_title(CHAPTER, "BLOCK\n")
    assert text.index("# A tiny chapter") < text.index("BLOCK") < text.index("Some prose.")
    no_title = CHAPTER.replace("# A tiny chapter\n", "").replace('print("answer"', '# not a title\nprint("answer"')
    text = banner.insert_under_title(no_title, "BLOCK\n")
    assert text.index("BLOCK") < text.index("Some prose.")  # after the front matter, not in the code


def test_the_cache_key_follows_profile_device_and_companion():
    files = store.companion_files()
    key = banner.cache_key_cell("smoke", "a CPU", files)
    assert key != banner.cache_key_cell("quick", "a CPU", files)
    assert key != banner.cache_key_cell("smoke", "NVIDIA H100", files)
    assert key != banner.cache_key_cell("smoke", "a CPU", dict(files, **{"data.py": "edited"}))
    assert ":tags: [remove-cell]" in key


def test_every_book_chapter_is_found():
    found = {chapters.chapter_id(md) for md in chapters.chapters()}
    assert {"first_transfer", "three_modes", "ecommerce", "performance"} <= found
    assert not any(name.startswith("_") for name in found)


def _translate(root: Path) -> None:
    """The Chinese counterpart of the tiny chapter: its prose translated, its code cells the same."""
    english = (root / "book" / "tiny.md").read_text()
    (root / "book" / "zh").mkdir(exist_ok=True)
    chinese = english.replace("# A tiny chapter", "# 一个很小的章节").replace("Some prose.", "一些正文。")
    (root / "book" / "zh" / "tiny.md").write_text(chinese.replace("More prose.", "更多正文。"))


TINY_TOC = "format: jb-book\nroot: book/tiny\nchapters:\n  - file: book/zh/tiny\n"


def _jupyter_book(root: Path, toc: str = TINY_TOC) -> subprocess.CompletedProcess:
    """Build the tiny book (both languages) with the edition's extension, warnings as errors."""
    _translate(root)
    (root / "_config.yml").write_text(
        "title: tiny\nonly_build_toc_files: true\nexecute:\n  execute_notebooks: cache\n  timeout: 120\n"
        f"sphinx:\n  local_extensions:\n    edition: {ROOT}\n  config:\n    nb_execution_raise_on_error: true\n"
    )
    (root / "_toc.yml").write_text(toc)
    return subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root), "-W", "-n", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _build(root: Path) -> tuple[str, str, str]:
    """The English page, the Chinese page and the build's log."""
    done = _jupyter_book(root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    html = root / "_build" / "html" / "book"
    return (html / "tiny.html").read_text(), (html / "zh" / "tiny.html").read_text(), done.stdout + done.stderr


@pytest.mark.slow
def test_the_website_shows_a_fresh_reference_and_executes_a_stale_chapter(stored, tmp_path):
    root = _copy(stored, tmp_path)
    path = root / "book" / "_reference" / "tiny.ipynb"
    nb = nbformat.read(path, as_version=4)  # mark the stored output: the page must show it, not a re-run
    nb.cells[[c.cell_type for c in nb.cells].index("code")].outputs[0]["text"] = "answer from the stored run\n"
    nbformat.write(nb, path)
    html, zh, log = _build(root)
    assert "answer from the stored run" in html and "answer 42" not in html, "a fresh chapter is not executed"
    assert banner.CSS_CLASS in html and "Executed in the" in html and "smoke" in html
    assert "answer from the stored run" in zh and "一些正文。" in zh, "the Chinese page shows the same reference"
    assert banner.CSS_CLASS in zh and "本页输出" in zh, "with its header in Chinese"
    (root / "book" / "tiny.md").write_text(CHAPTER.replace("6 * 7", "6 * 7 + 0"))
    html, zh, log = _build(root)
    assert "answer 42" in html and "answer from the stored run" not in html, "a stale chapter runs at build time"
    assert banner.CSS_CLASS in html and "executed while" in html and "not shown" in html
    assert "code changed since the reference run" in html
    assert "answer 42" in zh and "参考运行之后，本章的代码有过改动" in zh
    assert log.count("Executing notebook") == 1, "the Chinese page shows the English run, it does not execute"


@pytest.mark.slow
def test_both_languages_link_to_each_other_and_declare_their_language(stored, tmp_path):
    html, zh, _ = _build(_copy(stored, tmp_path))
    assert '<html lang="en"' in html and '<html lang="zh-CN"' in zh
    assert 'href="zh/tiny.html"' in html and 'href="../tiny.html"' in zh
    assert "一个很小的章节" in zh


@pytest.mark.slow
def test_the_build_stops_on_a_page_without_its_counterpart(stored, tmp_path):
    done = _jupyter_book(_copy(stored, tmp_path), toc="format: jb-book\nroot: book/tiny\n")  # zh/tiny not listed
    assert done.returncode != 0 and "book/tiny.md has no counterpart" in done.stdout + done.stderr


def test_results_json_keeps_reference_times_per_profile_and_device(stored, monkeypatch, tmp_path):
    from benchmarks import results_io

    monkeypatch.setattr(results_io, "RESULTS", tmp_path / "results.json")
    prov = dict(stored[1], cpu_count=2, gpu=None)
    run.record_seconds(prov)
    run.record_seconds(dict(prov, chapter="other", seconds=3.0))
    saved = json.loads((tmp_path / "results.json").read_text())["reference_seconds"]
    assert list(saved) == ["smoke on CPU (2 cores)"]
    assert 100 < prov["peak_rss_mb"] < 100_000  # the kernel's own peak resident memory, in MB
    chapters_seen = saved["smoke on CPU (2 cores)"]
    assert (
        chapters_seen["tiny"]["figures"] == {"seconds": prov["seconds"], "peak_rss_mb": prov["peak_rss_mb"]}
        and chapters_seen["other"]["figures"]["seconds"] == 3.0
    )
    assert chapters_seen["other"]["provenance"]["command"] == "python -m edition run --profile smoke other"
    assert chapters_seen["tiny"]["provenance"]["device"] == prov["device"]
    assert chapters_seen["tiny"]["provenance"]["cpu_model"] == prov["cpu_model"] and prov["cpu_model"]
    assert chapters_seen["tiny"]["provenance"]["date"] == prov["date"]  # the run's own, not the time of writing


def test_readme_chapter_times_are_the_measured_ones():
    """The README's table is what the runs wrote to results.json, not typed in (nor left behind)."""
    readme = (ROOT / "README.md").read_text()
    shown = readme.split(times.START, 1)[1].split(times.END, 1)[0].strip()
    assert shown == times.table(json.loads(times.RESULTS.read_text())), "run `python -m edition times`"
    assert "quick, CPU" in shown or "full, " in shown, "some reference run has been measured"
    assert ":start-after: do not edit -->" in (ROOT / "book" / "how_to_use.md").read_text()  # the page includes it


def test_times_table_layout():
    results = {
        "benchmarks": {
            "book_smoke": {"figures": {"book_smoke_seconds_per_chapter": {"a": 61.0}}, "provenance": {"cores": 2}}
        },
        "reference_seconds": {"full on NVIDIA H100 (16 cores)": {"b": {"figures": {"seconds": 300.4}}}},
    }
    assert times.table(results).splitlines() == [
        "| chapter | smoke, CPU (2 cores) | full, NVIDIA H100 (16 cores) |",
        "| --- | ---: | ---: |",
        "| `a` | 1:01 | — |",
        "| `b` | — | 5:00 |",
    ]


def test_a_failing_chapter_stores_nothing_and_keeps_its_partial_run(tmp_path, monkeypatch):
    book = tmp_path / "book"
    book.mkdir()
    (book / "broken.md").write_text(
        CHAPTER.replace('print("answer", 6 * 7)', 'print("before")\nassert 6 * 7 == 43, "arithmetic"')
    )
    monkeypatch.setattr(run, "FAILED_DIR", tmp_path / "failed")
    with pytest.raises(run.ChapterFailed, match="arithmetic.*outputs so far are in"):
        run.run_chapter(book / "broken.md", "smoke", timeout=120, reference_dir=book / "_reference", book=book)
    assert not (book / "_reference").exists()
    kept = nbformat.read(tmp_path / "failed" / "broken.ipynb", as_version=4)
    assert any("before" in o.get("text", "") for c in kept.cells if c.cell_type == "code" for o in c.outputs)
