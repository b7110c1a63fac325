"""The last run of the GPU-marked tests (``TLBOOK_WRITE_RESULTS=1 pytest -m gpu``) on a CUDA
machine, for the book to show.

With ``TLBOOK_WRITE_RESULTS=1`` (and only then: a test session does not rewrite a tracked file
unless asked), ``tests/conftest.py`` hands every GPU test's outcome to :func:`note`, and :func:`write` records
them in ``benchmarks/results.json`` (section ``gpu_tests``) when the session ends, with the
device, versions and date. Where there is no CUDA GPU the tests are skipped and nothing is
written: the record always describes a run that happened.
"""

from __future__ import annotations

from . import results_io

FIGURES = ("passed", "failed", "tests")
_OUTCOMES: dict[str, str] = {}


def note(nodeid: str, outcome: str) -> None:
    """Remember ``outcome`` (``passed``, ``failed`` or ``skipped``) of the GPU test ``nodeid``;
    a failure in setup, call or teardown makes the test failed."""
    if _OUTCOMES.get(nodeid) != "failed":
        _OUTCOMES[nodeid] = outcome


def write() -> dict | None:
    """Record the GPU tests that ran (none skipped); ``None`` when none ran."""
    ran = {k: v for k, v in _OUTCOMES.items() if v != "skipped"}
    if not ran:
        return None
    figures = {
        "passed": sum(v == "passed" for v in ran.values()),
        "failed": sum(v == "failed" for v in ran.values()),
        "tests": dict(sorted(ran.items())),
    }
    return results_io.record("gpu_tests", (), figures, "TLBOOK_WRITE_RESULTS=1 pytest -m gpu tests")
