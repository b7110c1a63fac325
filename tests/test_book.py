"""The book's wiring: every chapter is in the table of contents and starts honestly."""

from pathlib import Path

import yaml
from chapters_to_notebooks import chapters  # tests/ is on sys.path (pytest's rootdir-less import mode)

ROOT = Path(__file__).resolve().parents[1]


def _toc_files() -> set[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = {toc["root"]}
    for part in toc.get("parts", []):
        for chapter in part["chapters"]:
            files.add(chapter["file"])
            files.update(s["file"] for s in chapter.get("sections", []))
    return files


def test_every_chapter_is_in_the_toc_and_exists():
    toc = _toc_files()
    for md in chapters():
        assert str(md.relative_to(ROOT).with_suffix("")) in toc, f"{md} is missing from _toc.yml"
    for entry in toc:
        assert (ROOT / f"{entry}.md").exists(), f"_toc.yml names {entry}, which does not exist"


def test_every_chapter_prints_profile_device_and_sources():
    found = chapters()
    assert len(found) >= 1
    for md in found:
        text = md.read_text()
        assert "companion.start_chapter(" in text, f"{md.name} must start with companion.start_chapter()"
        assert "assert " in text, f"{md.name} asserts none of its claims"
