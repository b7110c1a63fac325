"""Jupyter Book extension: chapters with a fresh reference are rendered from it, the others carry a banner.

How a fresh chapter avoids execution: before myst-nb reads the page, its stored outputs are put into
the build's execution cache (jupyter-cache) under the hash of the page's own code cells, read
with myst-nb's own reader; myst-nb then finds them there, as for any cached notebook, and executes
nothing. A stale or missing chapter gets a hidden code cell keyed on profile, device and companion
(:func:`edition.banner.cache_key_cell`), so it never matches a reference and never re-uses outputs of
other code. Every chapter page is re-read on every build: its header depends on files Sphinx does
not track (the references, the companion).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

from . import banner, languages, measured, store
from .chapters import chapter_id, chapters, translations
from .status import chapter_status

logger = logging.getLogger(__name__)


def _build_device() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    if torch.backends.mps.is_available():
        return "an Apple GPU (MPS)"
    return "a CPU"


def on_builder_inited(app: Sphinx) -> None:
    """Decide fresh / stale / missing for every chapter, once; an unreadable reference, or a page
    without its counterpart in the other language, stops the build. A Chinese chapter takes its
    English chapter's status: it shows the outputs of the same code."""
    missing = languages.missing_counterparts(Path(app.srcdir))
    if missing:
        raise ExtensionError("every page needs its counterpart in the other language: " + "; ".join(missing))
    book = Path(app.srcdir) / "book"
    reference_dir = Path(app.config.tlbook_reference_dir or book / "_reference")
    companion = store.companion_files()
    app.tlbook_status = {}
    for md in chapters(book):
        try:
            status = chapter_status(md, reference_dir, book, companion)
        except store.ReferenceError as exc:
            raise ExtensionError(str(exc)) from None
        app.tlbook_status[f"book/{chapter_id(md, book)}"] = status
        logger.info(f"[reference edition] {status.chapter}: {status.state} ({status.reason})")
    for md in translations(book):
        english = f"book/{chapter_id(languages.english_source(md, book), book)}"
        if english in app.tlbook_status:
            app.tlbook_status[f"book/{chapter_id(md, book)}"] = app.tlbook_status[english]
    app.tlbook_companion = companion


def on_env_get_outdated(app: Sphinx, env, added, changed, removed) -> list[str]:
    return [doc for doc in getattr(app, "tlbook_status", {}) if doc in env.found_docs]


def _prime_cache(app: Sphinx, docname: str, text: str, status) -> None:
    """Store the reference's outputs in the execution cache, keyed as myst-nb will key this page."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from myst_nb.core.read import create_nb_reader

    env = app.env
    path = env.doc2path(docname)
    nb = create_nb_reader(str(path), env.myst_config, env.mystnb_config, text).read(text)
    cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    stored = [cell for cell in status.notebook.cells if cell.cell_type == "code"]
    if len(cells) != len(stored):  # cannot happen for a fresh reference; refuse rather than misalign
        raise ExtensionError(f"{status.reference_path}: {len(stored)} code cells stored, the page has {len(cells)}")
    for cell, ran in zip(cells, stored):
        cell.outputs, cell.execution_count = ran.outputs, ran.get("execution_count")
    cache = get_cache(env.mystnb_config.execution_cache_path or ".jupyter_cache")
    bundle = CacheBundleIn(nb, str(path), data={"execution_seconds": status.provenance["seconds"]})
    cache.cache_notebook_bundle(bundle, check_validity=False, overwrite=True)


def on_source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    """Under every book page's title: the language switch, then, on a chapter, where its outputs come from."""
    status = getattr(app, "tlbook_status", {}).get(docname)
    if status is not None:
        _insert_outputs_header(app, docname, source, status)
    if docname.startswith("book/"):
        source[0] = banner.insert_under_title(source[0], languages.switch_block(docname))


def _insert_outputs_header(app: Sphinx, docname: str, source: list[str], status) -> None:
    lang = languages.language(docname)
    link = (Path(app.srcdir) / "book" / "performance.md").exists()  # where full-size figures are
    if status.fresh:
        text = banner.insert_under_title(
            source[0], banner.reference_header(status.provenance, status.changed_companion, lang, link)
        )
        _prime_cache(app, docname, text, status)
    else:
        from companion.errors import ProfileError
        from companion.profiles import get_profile

        try:
            profile = get_profile()
        except ProfileError as exc:  # BOOK_PROFILE=typo: say so instead of a traceback
            raise ExtensionError(f"{exc} (make book BOOK_PROFILE=...)") from None
        device = _build_device()
        _fresh_work_dir(app, docname)
        block = banner.build_banner(profile, device, status.reason, status.provenance, lang, link)
        block += "\n" + banner.cache_key_cell(profile.name, device, app.tlbook_companion)
        text = banner.insert_under_title(source[0], block)
    source[0] = text


def _fresh_work_dir(app: Sphinx, docname: str) -> None:
    """Give the chapter this build is about to execute an empty ``TLBOOK_WORK`` (its kernel inherits
    the environment), as :mod:`edition.run` does: no page shows what an earlier execution wrote."""
    from companion import settings

    folder = Path(app.outdir).parent / "tlbook-work" / docname.replace("/", "-")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[settings.WORK] = str(folder)
    os.environ.setdefault("TLBOOK_OFFLINE", "0" if settings.network_reachable() else "1")


LAUNCHERS = ("Colab", "Binder", "JupyterHub")


def _launch_buttons(buttons) -> list[dict]:
    """The launch buttons (Colab, Binder, ...) among the theme's header buttons, at any depth."""
    found = []
    for button in buttons or []:
        if isinstance(button, dict):
            found += [button] if button.get("text") in LAUNCHERS else _launch_buttons(button.get("buttons"))
    return found


def on_html_page_context(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Declare the page's language, and point a chapter's launch buttons at its launchable notebook
    (``notebooks/NAME.ipynb``, :mod:`edition.notebooks`): Colab cannot open a MyST Markdown file, and a notebook opens as a
    notebook in any JupyterLab. Runs after sphinx-book-theme built the buttons (priority 501)."""
    if not pagename.startswith("book/"):
        return
    context["language"] = languages.HTML_LANG[languages.language(pagename)]  # <html lang="zh-CN"> in book/zh/
    name = pagename.removeprefix("book/")
    if not (Path(app.srcdir) / "notebooks" / f"{name}.ipynb").exists():
        return
    for button in _launch_buttons(context.get("header_buttons")):
        button["url"] = button["url"].replace(f"{pagename}.md", f"notebooks/{name}.ipynb")


def setup(app: Sphinx) -> dict:
    app.add_config_value("tlbook_reference_dir", "", "env")
    app.add_directive("tlbook-measured", measured.MeasuredDirective)
    app.connect("builder-inited", on_builder_inited)
    app.connect("env-get-outdated", on_env_get_outdated)
    app.connect("source-read", on_source_read)
    app.connect("html-page-context", on_html_page_context, priority=600)
    return {"parallel_read_safe": False, "parallel_write_safe": True}
