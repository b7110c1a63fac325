"""Fresh or stale: may a chapter's page show its stored reference run?

The rule, and why:

- **Changed chapter code always makes a reference stale.** A reference is fresh only when its code
  cells are, in order and character for character (trailing white space aside), the chapter's
  code cells now. Prose may change freely: the page shows today's text beside the stored outputs.
- **A changed companion does not, by default; it is said on the page.** The companion changes in
  most sessions (refactors, error messages, tests) while a GPU to re-run the chapters is lent to
  few, so counting every companion change would put `smoke` outputs on most pages most of the
  time. Instead the header of a fresh page names the companion files that changed since the
  run, so the page never shows outputs the current code might not produce without saying so.
  ``TLBOOK_STRICT_REFERENCES=1`` (``make book STRICT=1``) counts companion changes as stale too.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import nbformat

from . import store
from .chapters import BOOK, chapter_id, code_fingerprint, code_sources, read_notebook

STRICT_ENV = "TLBOOK_STRICT_REFERENCES"


@dataclasses.dataclass(frozen=True)
class ChapterStatus:
    """What the website may show for one chapter.

    ``state`` is ``"fresh"`` (show the reference), ``"stale"`` (a reference exists but ran other
    code) or ``"missing"`` (no reference). ``changed_companion`` lists the companion files that
    differ from the reference run (empty when none do, or when there is no reference).
    """

    chapter: str
    state: str
    reason: str
    reference_path: Path
    provenance: dict | None = None
    notebook: nbformat.NotebookNode | None = None
    changed_companion: tuple[str, ...] = ()

    @property
    def fresh(self) -> bool:
        return self.state == "fresh"


def changed_companion_files(recorded: dict[str, str], current: dict[str, str]) -> tuple[str, ...]:
    """Files added, removed or edited in the companion since ``recorded`` was taken, sorted."""
    return tuple(sorted(name for name in recorded.keys() | current.keys() if recorded.get(name) != current.get(name)))


def strict_from_env() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes"}


def chapter_status(
    md: Path,
    reference_dir: Path = store.REFERENCE_DIR,
    book: Path = BOOK,
    companion: dict[str, str] | None = None,
    strict: bool | None = None,
) -> ChapterStatus:
    """Decide fresh / stale / missing for the chapter ``md`` (see the module's docstring).

    Raises:
        store.ReferenceError: the stored reference exists but cannot be read.
    """
    chapter = chapter_id(md, book)
    path = store.reference_path(chapter, reference_dir)
    if not path.exists():
        return ChapterStatus(chapter, "missing", "no stored reference run", path)
    nb, provenance = store.load(path)
    current_code = code_sources(read_notebook(md))
    if code_fingerprint(code_sources(nb)) != code_fingerprint(current_code):
        return ChapterStatus(chapter, "stale", "the chapter's code changed since the reference run", path, provenance)
    companion = store.companion_files() if companion is None else companion
    changed = changed_companion_files(provenance["companion_files"], companion)
    if changed and (strict_from_env() if strict is None else strict):
        reason = f"the companion changed since the reference run ({', '.join(changed)})"
        return ChapterStatus(chapter, "stale", reason, path, provenance, changed_companion=changed)
    return ChapterStatus(chapter, "fresh", "same code as the reference run", path, provenance, nb, changed)
