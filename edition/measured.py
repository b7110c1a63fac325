"""The performance appendix's measured figures, read from ``benchmarks/results.json`` when the
website is built (the ``tlbook-measured`` directive), so they cannot disagree with the chapter
headers, which come from the same runs.

Each table is a header row and body rows of strings; :class:`MeasuredDirective` turns it into a
docutils table. Only measured figures are shown; a goal not reached is said once, in words.
"""

from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

from .chapters import ROOT

RESULTS = ROOT / "benchmarks" / "results.json"
# benchmark: (figure, goal on a CPU, goal on a GPU), as benchmarks/ measures them
GOALS = {
    "cached_features": ("cached_features_speedup", 20.0, 20.0),
    "fit_vs_naive": ("fit_vs_naive", 1.0, 3.0),
    "channels_last": ("channels_last_cpu_train", 1.0, 1.0),
    "inference_batch": ("inference_batch_cpu_speed", 1.0, 1.0),
}
WORDS = {
    "en": {
        "chapter": "chapter",
        "minutes": "minutes, {where}",
        "memory": "peak MB, {where}",
        "smoke": "smoke on CPU ({cores} cores)",
        "benchmark": "benchmark",
        "ratio": "measured ratio",
        "value": "value",
        "goal": "goal",
        "measured": "measured",
        "missed": "below its goal of {goal:g}× on this machine",
        "met": "goal of {goal:g}× reached",
        "no_gpu": "No GPU run is recorded in this edition: the chapters' full-size figures are the "
        "published ones they cite.",
        "recipe": "recipe",
        "accuracy": "test accuracy (95 % interval)",
        "seconds": "seconds",
        "verdict": "against the best",
        "best": "highest",
        "tied": "indistinguishable from the highest (paired 95% interval of the difference {d} includes 0)",
        "below": "below the highest (paired 95% interval of the difference {d})",
        "cli": "command line (--mode finetune, same images as PNG files)",
        "cli_ratio": "{ratio:g}× the fastest peer's time, {same:g}× its own recipe on tensors in memory",
    },
    "zh": {
        "chapter": "章节",
        "minutes": "分钟，{where}",
        "memory": "内存峰值（MB），{where}",
        "smoke": "smoke，CPU（{cores} 核）",
        "benchmark": "基准测试",
        "ratio": "实测比值",
        "value": "数值",
        "goal": "目标",
        "measured": "测量",
        "missed": "在这台机器上低于 {goal:g}× 的目标",
        "met": "达到 {goal:g}× 的目标",
        "no_gpu": "本版没有记录 GPU 运行：各章的完整规模数字就是它们引用的已发表结果。",
        "recipe": "方案",
        "accuracy": "测试准确率（95% 区间）",
        "seconds": "秒",
        "verdict": "与最高者相比",
        "best": "最高",
        "tied": "与最高者无法区分（差值的配对 95% 区间 {d} 包含 0）",
        "below": "低于最高者（差值的配对 95% 区间 {d}）",
        "cli": "命令行（--mode finetune，同样的图像存为 PNG 文件）",
        "cli_ratio": "最快同类方案用时的 {ratio:g} 倍，同一方案在内存张量上用时的 {same:g} 倍",
    },
}


def load(path: Path = RESULTS) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _when(provenance: dict) -> str:
    return f"{provenance['date'][:10]}, {provenance['device']}, torch {provenance['torch']}, {provenance['commit']}"


def chapter_minutes(results: dict, lang: str = "en") -> tuple[list[str], list[list[str]]]:
    """Minutes per chapter: one column per profile and device of the reference runs, then smoke;
    then the peak resident memory of each reference run's kernel, where it was measured."""
    w, references = WORDS[lang], results.get("reference_seconds", {})
    columns = {w["minutes"].format(where=where): (runs, "seconds") for where, runs in references.items()}
    smoke = results.get("benchmarks", {}).get("book_smoke")
    if smoke:
        where = w["smoke"].format(cores=smoke["provenance"]["cores"])
        per_chapter = smoke["figures"]["book_smoke_seconds_per_chapter"]
        columns[w["minutes"].format(where=where)] = (
            {k: {"figures": {"seconds": v}} for k, v in per_chapter.items()},
            "seconds",
        )
    for where, runs in references.items():
        if any(run["figures"].get("peak_rss_mb") for run in runs.values()):
            columns[w["memory"].format(where=where)] = (runs, "peak_rss_mb")
    names = sorted({name for runs, _ in columns.values() for name in runs})
    return [w["chapter"], *columns], [
        [name] + [_cell(runs, name, key) for runs, key in columns.values()] for name in names
    ]


def _cell(runs: dict, name: str, key: str) -> str:
    value = runs.get(name, {}).get("figures", {}).get(key)
    if value is None:
        return "—"
    return f"{value / 60:.1f}" if key == "seconds" else f"{value:,}"


def benchmark_rows(results: dict, lang: str = "en") -> tuple[list[str], list[list[str]]]:
    """The speed ratios of ``make bench``, each with its goal in words and where it was measured."""
    w, bench, rows = WORDS[lang], results.get("benchmarks", {}), []
    for name, (figure, cpu_goal, gpu_goal) in GOALS.items():
        if name not in bench:
            continue
        entry = bench[name]
        goal = gpu_goal if entry["provenance"]["device"].startswith("cuda") else cpu_goal
        ratio = entry["figures"][figure]
        verdict = (w["met"] if ratio >= goal else w["missed"]).format(goal=goal)
        rows.append([figure, f"{ratio:g}×", verdict, _when(entry["provenance"])])
    return [w["benchmark"], w["ratio"], w["goal"], w["measured"]], rows


def full_size_rows(results: dict, lang: str = "en") -> tuple[list[str], list[list[str]]]:
    """Figures measured on a GPU (``make bench`` on CUDA, ``benchmarks/full_size.py``); none: no rows."""
    rows = []
    for name in ("gpu", "full_size"):
        entry = results.get("benchmarks", {}).get(name) or results.get(name)
        if not entry or "figures" not in entry:
            continue
        for key, value in entry["figures"].items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append([f"{name}: {key}", f"{value:g}", _when(entry["provenance"])])
    w = WORDS[lang]
    return [w["benchmark"], w["value"], w["measured"]], rows


def peer_rows(results: dict, lang: str = "en") -> tuple[list[str], list[list[str]]]:
    """The peer benchmark: each recipe's test accuracy with its interval and time, and whether its
    interval overlaps the highest one's (then the two are not ranked); then the command line."""
    w, entry = WORDS[lang], results.get("benchmarks", {}).get("peers")
    header = [w["recipe"], w["accuracy"], w["seconds"], w["verdict"]]
    if not entry:
        return header, []
    peers = entry["figures"]["peers"]
    top = max(peers.values(), key=lambda r: r["test_accuracy"])
    rows = []
    for name, r in peers.items():
        difference, low, high = r["vs_best"]
        shown = f"{difference:+.3f} [{low:+.3f}, {high:+.3f}]"
        verdict = w["best"] if r is top else (w["below"] if high < 0 else w["tied"]).format(d=shown)
        low_acc, high_acc = r["interval_95"]
        rows.append([name, f"{r['test_accuracy']:.3f} [{low_acc:.3f}, {high_acc:.3f}]", f"{r['seconds']:g}", verdict])
    figures = entry["figures"]
    ratio = w["cli_ratio"].format(ratio=figures["peers_cli_vs_fastest"], same=figures["peers_cli_vs_in_memory"])
    rows.append([w["cli"], "", "", ratio])
    return header, rows


TABLES = {
    "chapter-times": chapter_minutes,
    "benchmarks": benchmark_rows,
    "full-size": full_size_rows,
    "peers": peer_rows,
}


def _table(header: list[str], rows: list[list[str]]) -> nodes.table:
    table, group = nodes.table(), nodes.tgroup(cols=len(header))
    table += group
    group.extend(nodes.colspec(colwidth=1) for _ in header)

    def row(cells: list[str]) -> nodes.row:
        line = nodes.row()
        for text in cells:
            line += nodes.entry("", nodes.paragraph(text=text))
        return line

    group += nodes.thead("", row(header))
    group += nodes.tbody("", *(row(cells) for cells in rows))
    return table


class MeasuredDirective(SphinxDirective):
    """``:::{tlbook-measured} chapter-times`` (or ``benchmarks``, ``full-size``, ``peers``), ``:lang: zh``."""

    required_arguments = 1
    option_spec = {"lang": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        kind, lang = self.arguments[0], self.options.get("lang", "en")
        if kind not in TABLES:
            raise self.error(f"tlbook-measured: unknown table {kind!r}; choose from {', '.join(TABLES)}")
        header, rows = TABLES[kind](load(), lang)
        if not rows and kind == "full-size":
            return [nodes.paragraph(text=WORDS[lang]["no_gpu"])]
        return [_table(header, rows)]
