"""The book's wiring: every chapter is in the table of contents and starts honestly."""

import sys
from pathlib import Path

import jupytext
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from edition.chapters import chapters  # noqa: E402


def test_every_chapter_is_in_the_toc_and_exists():
    sys.path.insert(0, str(ROOT))
    from edition.languages import toc_docnames  # the one reader of _toc.yml, shared with the build

    toc = set(toc_docnames())
    for md in chapters():
        assert str(md.relative_to(ROOT).with_suffix("")) in toc, f"{md} is missing from _toc.yml"
    for entry in toc:
        assert (ROOT / f"{entry}.md").exists(), f"_toc.yml names {entry}, which does not exist"


def test_every_chapter_calls_start_chapter_first_and_contains_asserts():
    """The source side; what the stored runs print is checked below, what each assert checks by nbval."""
    found = chapters()
    assert len(found) >= 1
    for md in found:
        code = [c.source for c in jupytext.read(md).cells if c.cell_type == "code"]
        assert "companion.start_chapter(" in code[0], (
            f"{md.name}: the first code cell must call companion.start_chapter()"
        )
        assert any(line.lstrip().startswith("assert ") for cell in code for line in cell.splitlines()), (
            f"{md.name} asserts none of its claims"
        )


def test_stored_runs_print_profile_device_and_sources_first():
    """What a reader sees at the top of each stored run: the profile, the device, then where data and weights came from."""
    sys.path.insert(0, str(ROOT))
    from edition import store

    references = sorted(store.REFERENCE_DIR.glob("*.ipynb"))
    assert references, "no stored reference run"
    for path in references:
        nb, prov = store.load(path)
        outputs = ["".join(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert outputs[0].startswith("profile : profile '" + prov["profile"] + "'"), path.name
        assert "device  : " + prov["device"] in outputs[0], path.name
        if path.stem != "performance":  # the appendix loads no dataset or weights
            assert any(line.startswith(("[data] ", "[weights] ")) for out in outputs for line in out.splitlines()), (
                path.name
            )


def test_chapter_code_is_formatted_and_fits_the_page():
    """The website shows code cells about 88 columns wide: every chapter's cells are ruff-formatted
    at 88 columns and no line is wider (``python -m edition.format_chapters`` fixes the first)."""
    sys.path.insert(0, str(ROOT))
    from edition import format_chapters

    for md in chapters():
        text, changed = format_chapters.format_chapter(md)
        assert changed == 0, (
            f"{md.name}: {changed} code cells are not ruff-formatted; run python -m edition.format_chapters"
        )
        assert format_chapters.wide_lines(text) == [], f"{md.name}: code lines wider than 88 columns"


def test_every_chapter_ends_with_exercises_and_collapsed_hints():
    """3 to 5 numbered exercises under a last ``## Exercises`` heading, each hint collapsed."""
    import re

    for md in chapters():
        text = md.read_text(encoding="utf-8")
        headings = re.findall(r"^## (.+)$", text, re.M)
        assert headings and headings[-1].strip() == "Exercises", f"{md.name} does not end with ## Exercises"
        exercises = text.rsplit("\n## Exercises", 1)[1]
        outside_blocks = re.sub(r"^:::\{admonition\}.*?^:::$", "", exercises, flags=re.M | re.S)
        numbered = re.findall(r"^\d+\. ", outside_blocks, re.M)
        assert 3 <= len(numbered) <= 5, f"{md.name}: {len(numbered)} exercises"
        hints = re.findall(r"^:::\{admonition\} Hint\n:class: dropdown$", exercises, re.M)
        assert len(hints) >= len(numbered), f"{md.name}: every exercise needs a collapsed hint"


def test_launchable_notebooks_are_generated_from_the_current_chapters():
    """notebooks/NAME.ipynb (Colab, Binder) hold exactly the chapter's cells after the install cell."""
    from edition import notebooks

    assert notebooks.stale() == [], "Fix: python -m edition.notebooks"
    nb = yaml.safe_load((ROOT / "notebooks" / "first_transfer.ipynb").read_text())  # JSON is YAML
    first = nb["cells"][0]
    assert first["metadata"]["tags"] == ["remove-cell"] and "import companion" in "".join(first["source"])
    assert "pip" in "".join(first["source"]) and "git" in "".join(first["source"])
    assert all(cell.get("outputs", []) == [] for cell in nb["cells"])  # inputs only


def test_binder_installs_cpu_torch_the_companion_and_runs_quick():
    binder = ROOT / "binder"
    requirements = (binder / "requirements.txt").read_text()
    assert "download.pytorch.org/whl/cpu" in requirements and "-r ../requirements.txt" in requirements
    assert "pip install" in (binder / "postBuild").read_text() and "labconfig" in (binder / "postBuild").read_text()
    assert "TLBOOK_PROFILE=quick" in (binder / "start").read_text()
    for script in ("postBuild", "start"):
        assert (binder / script).stat().st_mode & 0o111, f"binder/{script} must be executable"
