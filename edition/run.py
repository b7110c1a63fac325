"""``make reference``: execute chapters in a profile and store them, with their provenance.

Each chapter runs in a fresh kernel (nbclient, errors fatal), in its own folder, with the profile
in ``TLBOOK_PROFILE``. Runs are hermetic: every chapter gets a fresh, empty ``TLBOOK_WORK`` for what
it writes (runs, cached features, image folders, checkpoints), removed afterwards, and reads only
datasets and weights from the shared cache. ``TLBOOK_OFFLINE`` is decided once for all chapters, so
an offline machine makes no failing download. A chapter that fails stores nothing and the others still run; every
finished chapter is stored at once and its run time written to ``benchmarks/results.json``, so an
interrupted run keeps what it finished.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from . import store
from .chapters import BOOK, ROOT, chapter_id, code_fingerprint, code_sources, read_notebook
from .times import update_readme

FAILED_DIR = ROOT / "_build" / "reference-failed"


class ChapterFailed(Exception):
    """A chapter's run stopped at a failing cell; nothing was stored as its reference."""


# Run in the chapter's own kernel after its last cell, then removed: the kernel reports what it ran on.
_PROBE = """\
import json, pathlib, platform, resource, torch, torchvision, companion
_p, _d = companion.get_profile(), companion.hardware.choose_device()
_info = pathlib.Path("/proc/cpuinfo")  # Linux; CPU training results can differ from one processor to another
_cpu = [l.split(":", 1)[1].strip() for l in (_info.read_text().splitlines() if _info.exists() else [])
        if l.startswith("model name")]
print(json.dumps({"profile": _p.name, "profile_summary": str(_p), "device": companion.hardware.describe(_d),
                  "gpu": torch.cuda.get_device_name(_d) if _d.type == "cuda" else None,
                  "torch": torch.__version__, "torchvision": torchvision.__version__,
                  "python": platform.python_version(), "cpu_model": (_cpu or [platform.processor() or platform.machine()])[0],
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))"""


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def source_revision(md: Path) -> tuple[str, bool | None]:
    """``(commit, dirty)``: HEAD, and whether the chapter or the companion differ from it.

    Without git (a copy of the tree on a GPU machine) the commit comes from ``TLBOOK_COMMIT``.
    """
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return os.environ.get("TLBOOK_COMMIT", "unknown"), None
    try:
        chapter = [str(md.resolve().relative_to(ROOT))]
    except ValueError:  # a chapter outside this checkout (tests): only the companion is checked
        chapter = []
    changes = _git("status", "--porcelain", "--", *chapter, "companion")
    return commit, bool(changes)


@contextlib.contextmanager
def hermetic_env(profile: str) -> Iterator[dict[str, str]]:
    """The environment of one chapter's run: ``profile``, no progress bars, ``TLBOOK_OFFLINE`` as
    asked or as probed, and a fresh ``TLBOOK_WORK``, removed when the run ends."""
    from companion import settings

    offline = os.environ.get("TLBOOK_OFFLINE") or ("0" if settings.network_reachable() else "1")
    work = tempfile.mkdtemp(prefix="tlbook-work-")
    try:
        yield {**os.environ, "TLBOOK_PROFILE": profile, "TLBOOK_PROGRESS": "0", "TLBOOK_OFFLINE": offline,
               settings.WORK: work}  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


def execute(md: Path, profile: str, timeout: int) -> tuple[nbformat.NotebookNode, dict, float]:
    """Run the chapter; return the executed notebook, what its kernel reported, and the seconds it took.

    Raises:
        ChapterFailed: a cell failed; the notebook executed so far is kept in ``FAILED_DIR``.
    """
    nb = read_notebook(md)
    nb.cells.append(nbformat.v4.new_code_cell(_PROBE))
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(md.parent)}}
    )
    start = time.perf_counter()
    try:
        with hermetic_env(profile) as env:
            client.execute(env=env)
    except (CellExecutionError, TimeoutError) as exc:
        kept = FAILED_DIR / f"{chapter_id(md, md.parent)}.ipynb"
        store.save(nb, kept)
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ChapterFailed(f"{last} (the outputs so far are in {kept})") from None
    seconds = time.perf_counter() - start
    probe = nb.cells.pop()
    reported = json.loads("".join(o.get("text", "") for o in probe.outputs if o.output_type == "stream"))
    return nb, reported, seconds


def provenance(md: Path, nb: nbformat.NotebookNode, reported: dict, seconds: float, book: Path = BOOK) -> dict:
    """Everything the page shows about this run, from the run itself."""
    commit, dirty = source_revision(md)
    return {
        "chapter": chapter_id(md, book),
        **reported,
        "commit": commit,
        "dirty": dirty,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "cpu_count": os.cpu_count(),
        "code_sha256": code_fingerprint(code_sources(nb)),
        "companion_files": store.companion_files(),
        "claims": claims(nb),
    }


def claims(nb: nbformat.NotebookNode) -> list[str]:
    """The chapter's ``[claim]`` lines (:meth:`companion.profiles.Profile.check`), in order, without the tag."""
    text = "".join(
        o.get("text", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream"
    )
    return [line[len("[claim] ") :] for line in text.splitlines() if line.startswith("[claim] ")]


def record_seconds(prov: dict) -> None:
    """Write the chapter's run time to ``benchmarks/results.json``, under its profile and device."""
    from benchmarks import results_io

    where = f"{prov['profile']} on {prov['gpu'] or 'CPU'} ({prov['cpu_count']} cores)"
    command = f"python -m edition run --profile {prov['profile']} {prov['chapter']}"
    commit = prov["commit"] and prov["commit"][:7] + ("+dirty" if prov["dirty"] else "")
    measured_by = {
        "device": prov["device"],
        "cpu_model": prov.get("cpu_model"),  # absent from runs stored before it was recorded
        "date": prov["date"],
        "cores": prov["cpu_count"],
        "torch": prov["torch"],
        "torchvision": prov["torchvision"],
        "commit": commit,
    }
    results_io.record(
        "reference_seconds",
        (where, prov["chapter"]),
        {"seconds": prov["seconds"], "peak_rss_mb": prov.get("peak_rss_mb")},
        command,
        measured_by=measured_by,
    )


def run_chapter(
    md: Path, profile: str, timeout: int = 1800, reference_dir: Path = store.REFERENCE_DIR, book: Path = BOOK
) -> dict:
    """Execute ``md`` in ``profile``, store it under ``reference_dir``; return its provenance."""
    nb, reported, seconds = execute(md, profile, timeout)
    if reported["profile"] != profile:
        raise RuntimeError(f"the kernel ran profile {reported['profile']!r}, not {profile!r}")
    prov = provenance(md, nb, reported, seconds, book)
    nb.metadata[store.KEY] = prov
    store.save(nb, store.reference_path(prov["chapter"], reference_dir))
    return prov


def run(chapters: list[Path], profile: str, timeout: int) -> int:
    """Run and store each chapter in turn; return the number that failed."""
    failed = 0
    for md in chapters:
        print(f"{chapter_id(md)}: executing in profile {profile!r} ...", flush=True)
        try:
            prov = run_chapter(md, profile, timeout)
        except (ChapterFailed, RuntimeError) as exc:
            failed += 1
            print(f"error: {chapter_id(md)} failed, nothing stored: {exc}", flush=True)
            continue
        record_seconds(prov)
        update_readme()
        print(f"{prov['chapter']}: stored, {prov['seconds']:.0f} s on {prov['device']}", flush=True)
    return failed
