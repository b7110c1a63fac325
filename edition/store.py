"""Reference runs on disk: ``book/_reference/<chapter>.ipynb``, an executed notebook with its provenance.

The provenance sits in the notebook's metadata under :data:`KEY`; everything in it is written by
:mod:`edition.run` from the run itself (profile, device, versions, commit, date, run time, and the
fingerprints of the chapter's code and of the companion it ran with).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nbformat

from .chapters import BOOK, ROOT

REFERENCE_DIR = BOOK / "_reference"
COMPANION_DIR = ROOT / "companion"
KEY = "tlbook_reference"
REQUIRED = ("chapter", "profile", "device", "torch", "commit", "date", "seconds", "code_sha256", "companion_files")


class ReferenceError(Exception):
    """A stored reference that cannot be used as it is: the message says which file and what to do."""


def reference_path(chapter: str, directory: Path = REFERENCE_DIR) -> Path:
    """Where the reference run of ``chapter`` (an id such as ``three_modes``) is stored."""
    return directory / f"{chapter}.ipynb"


def companion_files(directory: Path = COMPANION_DIR) -> dict[str, str]:
    """``{relative path: sha256}`` of every Python file of the companion package."""
    return {
        path.relative_to(directory).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def load(path: Path) -> tuple[nbformat.NotebookNode, dict]:
    """Read a stored reference and its provenance.

    Raises:
        ReferenceError: the file is not a valid notebook, or its provenance is missing or incomplete.
    """
    fix = f"re-create it with `make reference CHAPTER={path.stem}`, or delete it to publish a build run instead"
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except (OSError, ValueError, nbformat.ValidationError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ReferenceError(f"stored reference {path} cannot be read ({first_line}): {fix}") from None
    provenance = nb.metadata.get(KEY)
    if not isinstance(provenance, dict):
        raise ReferenceError(f"stored reference {path} has no provenance (metadata '{KEY}'): {fix}")
    missing = [field for field in REQUIRED if field not in provenance]
    if missing:
        raise ReferenceError(f"stored reference {path} lacks provenance fields {', '.join(missing)}: {fix}")
    return nb, dict(provenance)


def save(nb: nbformat.NotebookNode, path: Path) -> None:
    """Write ``nb`` to ``path`` atomically (the companion's ``atomic_write``): never half a notebook."""
    from companion.files import write_bytes

    text = nbformat.writes(nb) + "\n"
    write_bytes(path, text.encode("utf-8"))


def dumps_provenance(provenance: dict) -> str:
    """The provenance as one JSON line, for logs."""
    return json.dumps({k: v for k, v in provenance.items() if k != "companion_files"}, sort_keys=True)
