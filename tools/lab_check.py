"""Open a chapter in JupyterLab as a reader would, in headless Chromium, and keep a screenshot.

Starts ``jupyter lab`` from this environment on 127.0.0.1 with a token, opens the file browser
on ``book/``, double-clicks ``first_transfer.md`` and waits for notebook cells to appear: the
chapter must open as a notebook (jupytext as the default viewer, set up by ``make setup``), not
in the text editor. Chromium is driven over its DevTools protocol (a websocket), since a
double-click needs a running page. The screenshot lands in
``_build/screenshots/jupyterlab_first_transfer.png``.

Usage: python tools/lab_check.py   (exit status 0 when the chapter opened as a notebook)
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "first_transfer.md"
SHOT = ROOT / "_build" / "screenshots" / "jupyterlab_first_transfer.png"
sys.path.insert(0, str(Path(__file__).parent))
from browser_check import find_chromium  # noqa: E402
from cdp import chromium, free_port, open_tab, profile_folder, wait_for  # noqa: E402

LISTED = f"[...document.querySelectorAll('.jp-DirListing-item')].find(e => e.textContent.includes('{CHAPTER}'))"
DOUBLE_CLICK = f"(() => {{ const item = {LISTED}; item.dispatchEvent(new MouseEvent('dblclick', {{bubbles: true}})); return true; }})()"


async def _open_chapter(chromium_port: int, url: str) -> list[str]:
    page = await open_tab(chromium_port)
    await page.call("Page.navigate", url=url)
    if not await page.until(f"Boolean({LISTED})", 90):
        return [f"JupyterLab's file browser never listed book/{CHAPTER}"]
    await page.js(DOUBLE_CLICK)
    cells = await page.until("document.querySelectorAll('.jp-Notebook-cell').length", 60)
    await asyncio.sleep(2)  # let the cells render before the screenshot
    SHOT.parent.mkdir(parents=True, exist_ok=True)
    SHOT.write_bytes(base64.b64decode((await page.call("Page.captureScreenshot", format="png"))["data"]))
    if not cells:
        editors = await page.js("document.querySelectorAll('.jp-FileEditor').length")
        return [f"book/{CHAPTER} did not open as a notebook ({editors} text editors open). Fix: `make setup` installs "
                f"the jupytext default viewer in .venv/etc/jupyter/labconfig"]  # fmt: skip
    return []


def main() -> int:
    lab_port, token = free_port(), secrets.token_hex(16)
    root_flag = ["--allow-root"] if os.geteuid() == 0 else []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": tmp, "TLBOOK_PROFILE": "smoke"}
        # a copy of the chapters: JupyterLab may autosave what it opens, and the check must not change the book
        shutil.copytree(ROOT / "book", Path(tmp) / "book", ignore=shutil.ignore_patterns("_reference"))
        lab = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={lab_port}",
             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp}", *root_flag],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        try:
            wait_for(f"http://127.0.0.1:{lab_port}/api/status?token={token}", 90)
            url = f"http://127.0.0.1:{lab_port}/lab/tree/book?token={token}&reset"
            with profile_folder() as profile, chromium(find_chromium(), profile) as chromium_port:
                problems = asyncio.run(_open_chapter(chromium_port, url))
        finally:
            lab.terminate()
            lab.wait(timeout=30)
    for problem in problems:
        print(f"FAIL JupyterLab: {problem}")
    if not problems:
        print(f"ok   JupyterLab opens book/{CHAPTER} as a notebook; screenshot {SHOT.relative_to(ROOT)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
