"""benchmarks/results.json holds only figures that a run wrote, each with the run's provenance."""

import importlib
import json

import pytest

from benchmarks import results_io
from benchmarks.__main__ import BENCHMARKS

RESULTS = json.loads(results_io.RESULTS.read_text())


def _declared(section: str, keys: tuple[str, ...]) -> tuple[str, ...]:
    """The figure names that the writer of ``section`` (and entry ``keys``) produces."""
    if section == "benchmarks":
        assert len(keys) == 1 and keys[0] in BENCHMARKS, f"no benchmark named {keys}"
        return importlib.import_module(f"benchmarks.{keys[0]}").FIGURES
    if section == "reference_seconds":
        from edition.chapters import chapters

        assert len(keys) == 2 and keys[1] in {md.stem for md in chapters()}, f"no chapter {keys}"
        return ("seconds", "peak_rss_mb")
    module = {"mutation": "benchmarks.mutation", "gpu_tests": "benchmarks.gpu_tests"}[section]
    assert keys == (), f"{section} is one entry"
    return importlib.import_module(module).FIGURES


def _leaves_outside_entries(node, path=()):
    if isinstance(node, dict) and "figures" in node and "provenance" in node:
        return []
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves_outside_entries(v, path + (k,))]
    return [path]


def test_every_section_has_a_writer_and_every_figure_sits_in_an_entry():
    assert RESULTS["schema"] == results_io.SCHEMA
    flat = {k: v for k, v in RESULTS.items() if k != "schema" and k not in results_io.WRITERS}
    assert flat == results_io.flat_figures(RESULTS), "top-level figures are only the copies of the benchmark entries"
    stray = [p for s in results_io.WRITERS if s in RESULTS for p in _leaves_outside_entries(RESULTS[s], (s,))]
    assert stray == [], f"values outside any run's entry (typed in?): {stray}"


def test_every_entry_has_exactly_the_figures_its_writer_produces_and_its_provenance():
    found = list(results_io.entries(RESULTS))
    assert found, "results.json records no run"
    for section, keys, entry in found:
        declared, written = set(_declared(section, keys)), set(entry["figures"])
        prov = entry["provenance"]
        assert set(results_io.PROVENANCE_KEYS) <= set(prov), (section, keys, "provenance incomplete")
        if prov["complete"]:
            assert written == declared, (section, keys, written ^ declared)
        else:
            assert written <= declared and prov.get("note"), (section, keys, "a partial entry says what is missing")


def test_record_replaces_an_entry_whole_and_refuses_unknown_sections(tmp_path):
    path = tmp_path / "results.json"
    results_io.record("benchmarks", ("fit_vs_naive",), {"fit_vs_naive": 1.5, "typed_in": 9}, "make bench", path=path)
    results_io.record(
        "benchmarks",
        ("fit_vs_naive",),
        {"fit_vs_naive": 2.0},
        "python -m benchmarks fit_vs_naive",
        complete=False,
        note="cut short",
        path=path,
    )
    entry = json.loads(path.read_text())["benchmarks"]["fit_vs_naive"]
    assert entry["figures"] == {"fit_vs_naive": 2.0}  # nothing merged from the earlier run
    assert entry["provenance"]["complete"] is False and entry["provenance"]["note"] == "cut short"
    assert entry["provenance"]["command"] == "python -m benchmarks fit_vs_naive"
    assert json.loads(path.read_text())["fit_vs_naive"] == 2.0  # the top-level copy follows the entry
    with pytest.raises(ValueError, match="have no writer"):
        results_io.record("hand_typed", (), {"x": 1}, "vim", path=path)
    path.write_text('{"cached_features_speedup": 267.0}')
    with pytest.raises(ValueError, match="regenerate it with `make bench`"):
        results_io.load(path)


def test_mutation_figures_count_executed_mutants_only():
    from benchmarks import mutation

    figures = mutation.module_figures({"a": "killed", "b": "timeout", "c": "survived", "d": "not_run", "e": "killed"})
    assert figures["kill_rate"] == 0.75 and figures["not_run"] == 1 and figures["timeouts"] == 1
    assert mutation.module_figures({"a": "not_run"})["kill_rate"] is None


def _diff(old: str, new: str) -> str:
    return f"--- a.py\n+++ a.py\n@@ -1 +1 @@\n-{old}\n+{new}\n"


def test_survivors_are_classified_by_what_the_change_does():
    from benchmarks import mutation

    grid = "    grid = F.affine_grid(theta, list(x.shape), align_corners=False)"
    assert mutation.classify(_diff(grid, grid.replace("=False", "=None")))[0] == "equivalent"
    assert mutation.classify(_diff(grid, grid.replace(", align_corners=False", ", ")))[0] == "equivalent"
    size = '    crop = F.interpolate(crop, size=(32, 32), mode="bilinear", antialias=True)'
    assert mutation.classify(_diff(size, size.replace("antialias=True", "antialias=False")))[0] == "needs a test"
    assert mutation.classify(_diff(size, size.replace("(32, 32)", "(32, 33)")))[0] == "needs a test"
    assert mutation.classify(_diff("x", "y"), "companion.models.x__seq__mutmut_3")[0] == "import time"
    assert mutation.classify(_diff('        print(f"done {n}")', "        print(None)"))[0] == "display"


def test_gpu_test_record_counts_only_tests_that_ran(tmp_path, monkeypatch):
    from benchmarks import gpu_tests

    monkeypatch.setattr(results_io, "RESULTS", tmp_path / "results.json")
    monkeypatch.setattr(gpu_tests, "_OUTCOMES", {})
    gpu_tests.note("t::a", "skipped")
    assert gpu_tests.write() is None and not (tmp_path / "results.json").exists()
    gpu_tests.note("t::b", "passed")
    gpu_tests.note("t::c", "failed")
    gpu_tests.note("t::c", "passed")  # teardown after a failed call: still failed
    entry = gpu_tests.write()
    assert entry["figures"] == {"passed": 1, "failed": 1, "tests": {"t::b": "passed", "t::c": "failed"}}
