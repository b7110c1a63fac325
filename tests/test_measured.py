"""The performance appendix's tables come from results.json at build time, and the stored
reference runs that the website shows carry no machine traces."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edition import banner, measured, store  # noqa: E402
from edition.chapters import chapters  # noqa: E402

REFERENCES = sorted((ROOT / "book" / "_reference").glob("*.ipynb"))


def _machine_traces() -> re.Pattern:
    home = str(Path.home()).rstrip("/")
    forbidden = ["Downloading:", "URLError", "Traceback", "Errno", "/usr/share/", "/tmp/", home + "/"]
    return re.compile("|".join(re.escape(f) for f in forbidden))


def _shown_text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append("".join(output.get("text", "")))
        for mime, value in output.get("data", {}).items():
            if mime.startswith("text/"):
                parts.append("".join(value))
        parts.append("".join(output.get("traceback", [])))
    return "\n".join(parts)


@pytest.mark.parametrize("path", REFERENCES, ids=lambda p: p.stem)
def test_a_stored_reference_shows_no_machine_traces(path):
    nb, prov = store.load(path)
    pattern = _machine_traces()
    found = [
        (i, line.strip()[:120])
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for line in _shown_text(cell).splitlines()
        if pattern.search(line)
    ]
    assert found == [], f"{path.name}: {found} (re-run it: make reference CHAPTER={path.stem})"
    assert "resumed from" not in json.dumps([c.get("outputs", []) for c in nb.cells])


def test_the_trace_check_can_fail():
    cell = {"outputs": [{"output_type": "stream", "text": f'Downloading: "x" to {Path.home()}/.cache/x.pth\n'}]}
    assert _machine_traces().search(_shown_text(cell))


def test_chapter_times_equal_each_reference_run_time():
    results = measured.load()
    header, rows = measured.chapter_minutes(results)
    table = {row[0]: dict(zip(header[1:], row[1:])) for row in rows}
    for md in chapters():
        path = store.reference_path(md.stem)
        if not path.exists():
            continue
        _, prov = store.load(path)
        column = f"minutes, {prov['profile']} on {prov['gpu'] or 'CPU'} ({prov['cpu_count']} cores)"
        assert table[md.stem][column] == f"{prov['seconds'] / 60:.1f}", (md.stem, column)


def test_a_goal_not_reached_is_said_in_words_and_no_gpu_run_in_one_sentence():
    entry = lambda ratio: {  # noqa: E731
        "figures": {"fit_vs_naive": ratio},
        "provenance": {"date": "2026-12-02T00:00:00", "device": "cpu", "torch": "2.14.1", "commit": "abc"},
    }
    _, rows = measured.benchmark_rows({"benchmarks": {"fit_vs_naive": entry(0.8)}})
    assert rows[0][2] == "below its goal of 1× on this machine"
    _, rows = measured.benchmark_rows({"benchmarks": {"fit_vs_naive": entry(1.4)}}, lang="zh")
    assert rows[0][2] == "达到 1× 的目标"
    assert measured.full_size_rows({})[1] == []
    gpu = dict(entry(1.0), figures={"time_to_94_s": 41.5})
    assert measured.full_size_rows({"benchmarks": {"gpu": gpu}})[1][0][:2] == ["gpu: time_to_94_s", "41.5"]


def test_the_peer_table_ranks_only_recipes_whose_paired_interval_excludes_zero():
    peers = {
        "a": {"test_accuracy": 0.80, "interval_95": [0.78, 0.82], "seconds": 10.0, "vs_best": [0.0, 0.0, 0.0]},
        "b": {"test_accuracy": 0.77, "interval_95": [0.75, 0.79], "seconds": 5.0, "vs_best": [-0.03, -0.07, 0.01]},
        "c": {"test_accuracy": 0.70, "interval_95": [0.68, 0.72], "seconds": 1.0, "vs_best": [-0.1, -0.14, -0.06]},
    }
    figures = {"peers": peers, "peers_cli_vs_fastest": 1.5, "peers_cli_vs_in_memory": 1.2}
    _, rows = measured.peer_rows({"benchmarks": {"peers": {"figures": figures, "provenance": {}}}})
    assert [r[3] for r in rows[:3]] == [
        "highest",
        "indistinguishable from the highest (paired 95% interval of the difference -0.030 [-0.070, +0.010] includes 0)",
        "below the highest (paired 95% interval of the difference -0.100 [-0.140, -0.060])",
    ]
    assert rows[0][1] == "0.800 [0.780, 0.820]"
    assert rows[3][3] == "1.5× the fastest peer's time, 1.2× its own recipe on tensors in memory"
    assert measured.peer_rows({})[1] == []


def test_the_peak_memory_column_shows_each_reference_runs_megabytes():
    runs = {"x": {"figures": {"seconds": 90.0, "peak_rss_mb": 1234}}}
    header, rows = measured.chapter_minutes({"reference_seconds": {"quick on CPU (2 cores)": runs}})
    assert header == ["chapter", "minutes, quick on CPU (2 cores)", "peak MB, quick on CPU (2 cores)"]
    assert rows == [["x", "1.5", "1,234"]]


def test_no_header_or_banner_promises_a_pending_run():
    texts = [text for lang in banner.TEXT.values() for text in lang.values()]
    assert not any("pending" in t or "尚未进行" in t for t in texts)
