"""What a chapter page says about its outputs, as MyST Markdown inserted under the page title.

- a fresh reference: the provenance header (profile, device, torch, commit, date, run time);
- no fresh reference: a banner saying which profile and device of this build produced the outputs,
  plus a hidden code cell that keys the execution cache on profile, device and companion.
"""

from __future__ import annotations

import hashlib
import re

CSS_CLASS = "tlbook-provenance"
_TITLE = re.compile(r"^# .+$", re.MULTILINE)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def _where(prov: dict) -> str:
    return prov["gpu"] or "a CPU"


def _sizes(summary: str) -> str:
    """``"profile 'quick': 100 train / ..."`` -> ``"100 train / ..."``."""
    return summary.split(": ", 1)[-1]


def is_full_size(prov: dict) -> bool:
    """A reference counts as the book's full-size result when it ran in ``full`` on a GPU."""
    return prov["profile"] == "full" and bool(prov.get("gpu"))


def reference_header(prov: dict, changed_companion: tuple[str, ...] = ()) -> str:
    """The admonition shown at the top of a page rendered from its stored reference run."""
    commit = prov["commit"][:10] + (" with uncommitted changes" if prov.get("dirty") else "")
    facts = (
        f"Executed in the `{prov['profile']}` profile ({_sizes(prov.get('profile_summary', prov['profile']))}) "
        f"on {prov['device']}, torch {prov['torch']}, commit `{commit}`, {prov['date'][:10]}, "
        f"run time {_duration(prov['seconds'])}."
    )
    lines = [facts]
    if is_full_size(prov):
        title, kind = f"Outputs on this page: the reference run on {_where(prov)}", "tip"
    else:
        title, kind = (
            f"Outputs on this page: a `{prov['profile']}` run on {'a GPU' if prov['gpu'] else 'a CPU'}",
            "warning",
        )
        lines.append(
            "These numbers come from a smaller run, not the book's full-size results: "
            "the full GPU run of this version of the chapter is pending."
        )
    if prov.get("claims"):
        lines.append("Claims of the text checked by this run: " + "; ".join(prov["claims"]) + ".")
    if changed_companion:
        lines.append(
            f"The companion package has changed since this run ({', '.join(changed_companion)}). The code on "
            "this page is the code that ran, but re-running it now may print somewhat different numbers."
        )
    return _admonition(title, kind, lines)


def build_banner(profile, device: str, reason: str, prov: dict | None) -> str:
    """The admonition on a page whose outputs this build executed (no fresh reference)."""
    lines = [
        f"These outputs come from the `{profile.name}` profile ({_sizes(str(profile))}) on {device}, executed while "
        "this website was built. "
        + ("They show that the code runs, not what it achieves. " if profile.name == "smoke" else "")
        + "The full GPU run of this version of the chapter is pending."
    ]
    if prov is not None:
        lines.append(
            f"A stored reference run exists ({prov['profile']} on {_where(prov)}, commit `{prov['commit'][:10]}`), "
            f"but it is not shown: {reason}."
        )
    return _admonition(f"Outputs on this page: a `{profile.name}` run from the website build", "warning", lines)


def cache_key_cell(profile_name: str, device: str, companion_files: dict[str, str]) -> str:
    """A hidden code cell whose text changes whenever the profile, device or companion do.

    jupyter-cache keys executed notebooks on their code cells only; with this cell among them, outputs
    executed with other companion code, in another profile or on another device are never re-used.
    """
    digest = hashlib.sha256("".join(f"{k}={v};" for k, v in sorted(companion_files.items())).encode()).hexdigest()
    return (
        "```{code-cell} ipython3\n:tags: [remove-cell]\n\n"
        "# Added by the website build (edition.sphinx_ext): the execution cache keys on this cell.\n"
        f"# profile {profile_name}; device {device}; companion {digest[:16]}\n```\n"
    )


def _admonition(title: str, kind: str, lines: list[str]) -> str:
    body = "\n\n".join(lines)
    return f":::{{admonition}} {title}\n:class: {kind} {CSS_CLASS}\n\n{body}\n:::\n"


def insert_under_title(text: str, block: str) -> str:
    """``text`` (a MyST notebook) with ``block`` right after its ``# title`` line (or its front matter)."""
    start = 0
    if text.startswith("---"):
        end = text.find("\n---", 3)
        start = text.find("\n", end + 4) + 1 if end != -1 else 0
    first_cell = text.find("```{code-cell}", start)
    match = _TITLE.search(text, start, first_cell if first_cell != -1 else len(text))
    at = match.end() + 1 if match else start
    return f"{text[:at]}\n{block}\n{text[at:]}"
