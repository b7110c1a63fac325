"""`make mutants`: the kill rate of mutation testing, per core module, into benchmarks/results.json.

``make mutants`` runs mutmut (configured in ``pyproject.toml``, ``[tool.mutmut]``) over the
companion's core modules against the unit tests, then this module reads mutmut's verdicts
(``mutants/companion/<module>.py.meta``) and records, per module:

* ``killed``: a test failed (or the mutant hung until mutmut's timeout, which also counts as
  caught: ``timeouts`` says how many);
* ``survived``: every test that runs the mutated function passed;
* ``not_run``: no test calls the mutated function at all (``no tests`` in mutmut);
* ``kill_rate``: killed / (killed + survived), the share of *executed* mutants caught.

Each survivor is listed by name in ``benchmarks/mutants.md`` with its diff and its kind
(:data:`RULES`): equivalent, display-only, CUDA-only, or "needs a test".
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
STATUS = {
    1: "killed",
    3: "killed",
    0: "survived",
    33: "not_run",
    5: "not_run",
    34: "skipped",
    36: "timeout",
    24: "timeout",
    -24: "timeout",
    152: "timeout",
    255: "timeout",
}

# Survivors that no unit test should catch, recognised by the changed line of their diff:
# (regex on the mutated line, kind, reason). "equivalent": the program computes the same thing;
# "display": only text or a progress bar meant for a person changes; "CUDA": the line only matters
# on a GPU, and mutmut runs the CPU tests (the GPU tests cover it there). Anything else "needs a test".
RULES: list[tuple[str, str, str]] = [
    (r"nn\.ReLU\(inplace=", "equivalent", "an in-place ReLU computes the same values"),
    (
        r"\.parameters\(recurse=",
        "equivalent",
        "batch-norm layers have no sub-modules, so recursing finds the same parameters",
    ),
    (
        r"_forward_batches\(.*, (None|\"XX\w+XX\"|\"[A-Z]+\"), (progress|False|True|None)\):$",
        "display",
        "the label of a progress bar",
    ),
    (
        r"progress: bool \| None = (True|None)|_forward_batches\(.*, (True|None)\):$",
        "display",
        "whether a progress bar is drawn (tests run with TLBOOK_PROGRESS=0)",
    ),
    (r"desc=|bar\.set_postfix|leave=", "display", "a progress bar's text"),
    (r"^\s*print\(|if (not )?verbose|verbose: bool = (False|None)", "display", "what is printed for the reader"),
    (r'^\s*raise \w+\(f?"', "display", "the wording of an error message (tests check the phrases that say what to do)"),
    (r"map_location=", "equivalent", "the files hold CPU tensors, which load onto the CPU either way"),
    (
        r"channels_last|prepare_model|non_blocking|pin_memory|cudnn|device\.type == \"cuda\"|resident",
        "CUDA",
        "only changes what happens on a CUDA device",
    ),
    (
        r"align_corners=None",
        "equivalent",
        "None means False, PyTorch's default, in interpolate, affine_grid and grid_sample",
    ),
    (
        r"remap = torch\.full\(",
        "equivalent",
        "the fill only marks dropped classes, whose labels are masked out before the lookup; an int fill is int64 anyway",
    ),
    (r"torch\.as_tensor\(indices, (dtype=None)?\)", "equivalent", "integer indices become an int64 tensor either way"),
    (
        r"\.write-test|WRITE-TEST|probe\.write_text\(",
        "equivalent",
        "the probe file only tests that the folder is writable and is deleted at once",
    ),
]

# Keyword arguments whose removal changes nothing: the value removed is the function's default.
DEFAULT_KWARGS = {"align_corners=False": "PyTorch's default", 'mode="bilinear"': "grid_sample's default"}

# Functions mutmut cannot switch: they run while the module is imported, before a test selects a
# mutant (mutmut's trampoline picks the variant at call time). Their results are tested directly.
IMPORT_TIME = ("companion.models.x__seq",)


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
        "mutants": len(found),
        "killed": killed,
        "timeouts": counts["timeout"],
        "survived": counts["survived"],
        "suspicious": counts["suspicious"],
        "not_run": counts["not_run"],
        "not_checked": counts["not checked"],
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


def _changed_span(before: str, after: str) -> tuple[int, int, str, str] | None:
    """``(start, end, old, new)`` of the one region where ``after`` differs from ``before``."""
    import difflib

    ops = [op for op in difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not ops:
        return None
    start, end = ops[0][1], ops[-1][2]
    return start, end, before[start:end], after[ops[0][3] : ops[-1][4]]


def _in_help_text(before: str, after: str) -> bool:
    """Whether the change sits inside a ``help="..."`` or ``description="..."`` argument."""
    import re

    span = _changed_span(before, after)
    if span is None:
        return False
    return any(
        m.start(1) <= span[0] and span[1] <= m.end(1)
        for m in re.finditer(r'(?:help|description)=f?"((?:[^"\\]|\\.)*)"', before)
    )


def _touches_device(before: str, after: str) -> bool:
    """Whether the one change from ``before`` to ``after`` sits in a ``device`` argument or value."""
    if before.strip().startswith("device = "):
        return True
    span = _changed_span(before, after)
    if span is None:
        return False
    start, _, old, new = span
    return "device" in old or "device" in new or before[:start].rstrip().endswith("device=")


def classify(mutant_diff: str, name: str = "") -> tuple[str, str]:
    """``(kind, reason)`` of a survivor from its diff (:data:`RULES`), else ``("needs a test", "")``."""
    import re

    if name.startswith(IMPORT_TIME):
        return "import time", "runs while the module is imported, so mutmut cannot switch it; its results are tested"
    lines = mutant_diff.splitlines()
    changed = [line[1:] for line in lines if line.startswith("+") and not line.startswith("+++")]
    removed = [line[1:] for line in lines if line.startswith("-") and not line.startswith("---")]
    for pattern, kind, reason in RULES:
        if any(re.search(pattern, line) for line in changed):
            return kind, reason
    if len(changed) == len(removed) == 1:
        span = _changed_span(removed[0], changed[0])
        gone = span and not span[3].strip(" ,") and span[2].strip(" ,")
        if gone in DEFAULT_KWARGS:
            return "equivalent", f"removes {gone}, which is {DEFAULT_KWARGS[gone]}"
    if removed and all(re.fullmatch(r'\s*f?"(?:[^"\\]|\\.)*"\s*[,)]*\s*', line) for line in removed):
        return "display", "the wording of a message (tests check the phrases that say what to do)"
    if len(changed) == len(removed) == 1 and _in_help_text(removed[0], changed[0]):
        return "display", "the text of --help"
    if len(changed) == len(removed) == 1 and _touches_device(removed[0], changed[0]):
        return "CUDA", "only changes which device runs it, and on this CPU-only run every choice is the CPU"
    return "needs a test", ""


def write_report(survivors: list[str]) -> dict[str, str]:
    """``benchmarks/mutants.md``: every survivor with its diff and kind; returns ``{name: kind}``."""
    kinds, kind_of, sections = Counter(), {}, []
    for name in survivors:
        shown = diff(name)
        kind, reason = classify(shown, name)
        kinds[kind] += 1
        kind_of[name] = kind
        sections += [
            f"## `{name}`",
            "",
            f"**{kind}**" + (f": {reason}." if reason else ""),
            "",
            "```diff",
            shown,
            "```",
            "",
        ]
    head = [
        "# Surviving mutants",
        "",
        "Written by `make mutants` (`python -m benchmarks.mutation`); do not edit.",
        "",
        "A survivor is a small change to the companion that no unit test notices. Each is classified by",
        "the rules in `benchmarks/mutation.py`: **equivalent** (computes the same thing), **display**",
        "(only text meant for a person changes), **CUDA** (matters only on a GPU; mutmut runs the CPU",
        "tests), **import time** (runs while the module is imported, where mutmut cannot switch it),",
        "or **needs a test**.",
        "",
        "| kind | survivors |",
        "| --- | ---: |",
        *[f"| {k} | {n} |" for k, n in kinds.most_common()],
        "",
    ]
    REPORT.write_text("\n".join(head + sections))
    return kind_of


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
    kind_of = write_report(survivors)
    for module, m in per_module.items():
        kinds = Counter(k for n, k in kind_of.items() if n.startswith(f"companion.{module}."))
        m["survivors_by_kind"] = dict(kinds)
        unswitchable = kinds["equivalent"] + kinds["import time"]
        executed = m["killed"] + m["survived"] + m["suspicious"] - unswitchable
        m["kill_rate_of_non_equivalent"] = round(m["killed"] / executed, 4) if executed else None
    figures = {
        "modules": per_module,
        "goal": GOAL,
        "survivors": {"total": len(survivors), **dict(Counter(kind_of.values()))},
    }
    results_io.record("mutation", (), figures, "make mutants", complete=complete, note=note)
    for module, m in per_module.items():
        rate = "n/a" if m["kill_rate"] is None else f"{m['kill_rate']:.1%}"
        mark = "" if m["kill_rate"] is None or m["kill_rate"] >= GOAL else f"  (below the {GOAL:.0%} goal)"
        print(
            f"{module:9s} kill rate {rate:>6s}: {m['killed']} killed, {m['survived']} survived, "
            f"{m['not_run']} not run by any test{mark}"
        )
    print(f"written to {results_io.RESULTS}; survivors in {REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
