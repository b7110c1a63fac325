"""`make mutants`: the kill rate of mutation testing, per core module, into benchmarks/results.json.

``make mutants`` runs mutmut (configured in ``pyproject.toml``, ``[tool.mutmut]``) over the
companion's core modules against the unit tests, then this module reads mutmut's verdicts
(``mutants/companion/<module>.py.meta``) and records, per module:

* ``killed``: a test failed (or the mutant hung until mutmut's timeout, which also counts as
  caught: ``timeouts`` says how many);
* ``survived``: every test that runs the mutated function passed;
* ``not_run``: no test calls the mutated function at all (``no tests`` in mutmut);
* ``kill_rate``: killed / (killed + survived), the share of *executed* mutants caught.

Each survivor is listed by name in ``benchmarks/mutants.md`` with its diff, and either gets a
test or a reason why it cannot change behaviour (:data:`EQUIVALENT`).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from . import results_io

MODULES = ("train", "transfer", "data", "models", "cli")
GOAL = 0.85
FIGURES = ("modules", "goal", "survivors")
MUTANTS_DIR = results_io.ROOT / "mutants"
REPORT = Path(__file__).resolve().parent / "mutants.md"
STATUS = {1: "killed", 3: "killed", 0: "survived", 33: "not_run", 5: "not_run", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout"}

# Surviving mutants that cannot change what the code does, with the reason (kept short and checked
# against the current list: a name that no longer survives is dropped from the report).
EQUIVALENT: dict[str, str] = {}


def verdicts(module: str) -> dict[str, str]:
    """``{mutant name: status}`` for ``companion/<module>.py`` from mutmut's meta file."""
    meta = MUTANTS_DIR / "companion" / f"{module}.py.meta"
    if not meta.exists():
        return {}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: STATUS.get(code, "suspicious" if code is not None else "not checked") for name, code in codes.items()}


def module_figures(found: dict[str, str]) -> dict:
    """Counts and kill rate of one module's verdicts."""
    counts = Counter(found.values())
    killed = counts["killed"] + counts["timeout"]
    executed = killed + counts["survived"] + counts["suspicious"]
    return {
        "mutants": len(found), "killed": killed, "timeouts": counts["timeout"], "survived": counts["survived"],
        "suspicious": counts["suspicious"], "not_run": counts["not_run"], "not_checked": counts["not checked"],
        "kill_rate": round(killed / executed, 4) if executed else None,
    }


def diff(name: str) -> str:
    """mutmut's diff of one mutant against the source (``companion.<module>.<function>__mutmut_<n>``)."""
    import contextlib
    import os

    with contextlib.chdir(results_io.ROOT):  # mutmut reads its config and mutants/ from here
        from mutmut.mutation.diff_apply import get_diff_for_mutant

        path = Path(*name.split(".")[:2]).with_suffix(".py")
        try:
            return get_diff_for_mutant(name, path=path)
        except Exception as exc:  # a report line, not a crash: the figures are already written
            return f"(no diff: {type(exc).__name__}: {exc}; see `mutmut show {name}` in {os.getcwd()})"


def write_report(survivors: list[str]) -> None:
    """``benchmarks/mutants.md``: every survivor, its diff, and why it is equivalent where it is."""
    lines = ["# Surviving mutants", "", "Written by `make mutants` (`python -m benchmarks.mutation`); do not edit.",
             "A survivor is a change to the companion that no unit test notices. Each one below either",
             "needs a test, or is listed in `EQUIVALENT` in `benchmarks/mutation.py` with the reason it",
             "cannot change behaviour.", ""]
    for name in survivors:
        reason = EQUIVALENT.get(name)
        lines += [f"## `{name}`", "", f"Equivalent: {reason}" if reason else "Needs a test.", "",
                  "```diff", diff(name), "```", ""]
    REPORT.write_text("\n".join(lines))


def main(argv: list[str]) -> int:
    """Record the verdicts of the last ``mutmut run``; ``--partial`` when it was cut short."""
    per_module, survivors = {}, []
    for module in MODULES:
        found = verdicts(module)
        if found:
            per_module[module] = module_figures(found)
            survivors += sorted(n for n, s in found.items() if s in ("survived", "suspicious"))
    if not per_module:
        print("error: no mutmut results in mutants/; run `make mutants` first", file=sys.stderr)
        return 2
    unchecked = sum(m["not_checked"] for m in per_module.values())
    complete = unchecked == 0 and set(per_module) == set(MODULES)
    note = None if complete else f"cut short: {unchecked} mutants not checked, modules run: {sorted(per_module)}"
    figures = {"modules": per_module, "goal": GOAL,
               "survivors": {"total": len(survivors), "equivalent": sum(n in EQUIVALENT for n in survivors)}}
    results_io.record("mutation", (), figures, "make mutants", complete=complete, note=note)
    write_report(survivors)
    for module, m in per_module.items():
        rate = "n/a" if m["kill_rate"] is None else f"{m['kill_rate']:.1%}"
        mark = "" if m["kill_rate"] is None or m["kill_rate"] >= GOAL else f"  (below the {GOAL:.0%} goal)"
        print(f"{module:9s} kill rate {rate:>6s}: {m['killed']} killed, {m['survived']} survived, "
              f"{m['not_run']} not run by any test{mark}")
    print(f"written to {results_io.RESULTS}; survivors in {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
