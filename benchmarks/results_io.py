"""benchmarks/results.json: every measured figure of the project, each with the run that produced it.

The file has one section per writer, and nothing else:

* ``benchmarks``: ``make bench`` (``python -m benchmarks``), one entry per benchmark;
* ``reference_seconds``: ``make reference`` (``python -m edition run``), chapter run times;
* ``mutation``: ``make mutants`` (``python -m benchmarks.mutation``), kill rates per module;
* ``gpu_tests``: ``TLBOOK_WRITE_RESULTS=1 pytest -m gpu`` on a CUDA machine (``tests/conftest.py``), the last run of
  the GPU-marked tests.

An entry is always written whole by one run (:func:`record`): its figures and its provenance
(the command, date, device, versions and commit). A run never merges figures into an entry
that another run wrote, so every figure in the file can be traced to one command, and a test
fails on any key that no writer produces.

For the checks that read the speed figures by name (``results["cached_features_speedup"]``,
``results["fit_vs_naive"]``, ...), :func:`save` also writes every figure of the ``benchmarks``
entries at the top level: a copy derived from the entries on every write, never edited.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path

from companion.files import write_json

RESULTS = Path(__file__).resolve().parent / "results.json"
ROOT = RESULTS.parents[1]
SCHEMA = 2
WRITERS = {
    "benchmarks": "make bench (python -m benchmarks)",
    "reference_seconds": "make reference (python -m edition run)",
    "mutation": "make mutants (python -m benchmarks.mutation)",
    "gpu_tests": "TLBOOK_WRITE_RESULTS=1 pytest -m gpu on a CUDA machine (tests/conftest.py)",
}
PROVENANCE_KEYS = ("command", "date", "device", "cores", "torch", "torchvision", "python", "commit", "complete")


def _commit() -> str | None:
    """The checked-out commit (with ``+dirty`` for uncommitted changes other than the files the
    runs write themselves); ``TLBOOK_COMMIT`` where the tree was copied without git."""
    if os.environ.get("TLBOOK_COMMIT"):
        return os.environ["TLBOOK_COMMIT"]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        outputs = [f":!{p}" for p in ("benchmarks/results.json", "benchmarks/mutants.md", "README.md")]
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *outputs],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return sha + ("+dirty" if dirty else "")


def provenance(
    command: str, *, complete: bool = True, note: str | None = None, measured_by: dict | None = None
) -> dict:
    """Who measured: ``command``, date and time, device, cores, versions, commit; ``complete``
    is ``False`` for a run cut short, with ``note`` saying what is missing. ``measured_by``
    replaces any of these with what the measuring run itself recorded, when that was not this
    process (a notebook kernel, at its own date and commit)."""
    import torch
    import torchvision

    from companion import hardware

    found = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": hardware.describe(hardware.choose_device()),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "commit": _commit(),
        "complete": complete,
    }
    if note:
        found["note"] = note
    return {**found, **(measured_by or {})}


def load(path: Path | None = None) -> dict:
    """The sections of the file (an empty one of this schema when there is none yet)."""
    path = path or RESULTS
    if not path.exists():
        return {"schema": SCHEMA}
    results = json.loads(path.read_text())
    if results.get("schema") != SCHEMA:
        raise ValueError(f"{path} has schema {results.get('schema')!r}, not {SCHEMA}: regenerate it with `make bench`")
    return {k: v for k, v in results.items() if k == "schema" or k in WRITERS}  # the top-level copies are re-derived


def save(results: dict, path: Path | None = None) -> None:
    """Write ``results`` atomically, sections in a fixed order."""
    unknown = set(results) - set(WRITERS) - {"schema"} - set(flat_figures(results))
    if unknown:
        raise ValueError(f"results.json sections {sorted(unknown)} have no writer; known: {sorted(WRITERS)}")
    ordered = {"schema": SCHEMA, **{k: results[k] for k in WRITERS if k in results}, **flat_figures(results)}
    write_json(path or RESULTS, ordered)


def flat_figures(results: dict) -> dict:
    """Every figure of the ``benchmarks`` entries by its own name (the top-level copy)."""
    return {name: value for entry in results.get("benchmarks", {}).values() for name, value in entry["figures"].items()}


def record(
    section: str,
    keys: tuple[str, ...],
    figures: dict,
    command: str,
    *,
    complete: bool = True,
    note: str | None = None,
    measured_by: dict | None = None,
    path: Path | None = None,
) -> dict:
    """Replace the entry at ``results[section][keys[0]][keys[1]]...`` (the whole section when
    ``keys`` is empty) with ``{"figures": figures, "provenance": ...}``; return the entry."""
    results = load(path)
    entry = {
        "figures": figures,
        "provenance": provenance(command, complete=complete, note=note, measured_by=measured_by),
    }
    if not keys:
        results[section] = entry
    else:
        parent = results.setdefault(section, {})
        for key in keys[:-1]:
            parent = parent.setdefault(key, {})
        parent[keys[-1]] = entry
    save(results, path)
    return entry


def entries(results: dict):
    """Every ``(section, keys, entry)`` in ``results``: the dicts holding ``figures`` and ``provenance``."""

    def walk(node, keys):
        if isinstance(node, dict) and "figures" in node and "provenance" in node:
            yield keys, node
        elif isinstance(node, dict):
            for key, child in node.items():
                yield from walk(child, keys + (key,))

    for section in WRITERS:
        if section in results:
            for keys, entry in walk(results[section], ()):
                yield section, keys, entry
