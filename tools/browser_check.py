"""Open the built website's index and every chapter in headless Chromium, screenshot them, and
fail if a page shows a Python traceback or error output, links to a page or file that does not
exist, shows an image that is missing, or has code cells but no provenance header saying where
its outputs came from (the reference edition, or a build run under a banner).

Usage: python tools/browser_check.py [SITE_DIR]   (default _build/html; run `make book` first)

The site is served on 127.0.0.1 by Python's http.server, and Chromium (Debian's ``chromium``) is
started headless with no network beyond loopback. Screenshots of the last run stay in
``_build/screenshots/``. Exit status 0 when every page is clean, 1 otherwise (each problem is
printed with its page).
"""

from __future__ import annotations

import base64
import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--window-size=1280,2000",
    "--virtual-time-budget=8000",
]
ERROR_MARKERS = ("Traceback (most recent call last)", "output traceback", "output error")


class _Page(HTMLParser):
    """Links, images and element ids of one rendered page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "img":
            self.images.append(a.get("src") or "")


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("browser check: Chromium not found. Fix: `apt-get install chromium` (Debian) and re-run")


def pages(site: Path) -> list[Path]:
    """The index and every chapter page (not Sphinx's generated search/index pages)."""
    found = [site / "index.html"] + sorted((site / "book").rglob("*.html"))
    return [p for p in found if p.exists()]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # one line per page is printed instead
        pass


def _serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _chromium(binary: str, profile: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
    )


def _local_file(site: Path, base: str, url: str, page_url: str) -> tuple[Path | None, str]:
    """The file an internal URL points at (``None`` for external URLs) and its fragment."""
    full = urljoin(page_url, url)
    parsed = urlparse(full)
    if not full.startswith(base):
        return None, ""
    path = unquote(parsed.path)[len(urlparse(base).path) :]
    target = site / path
    if target.is_dir():
        target = target / "index.html"
    return target, parsed.fragment


LAUNCH = {
    "Colab": re.compile(r"^https://colab\.research\.google\.com/github/[^/]+/[^/]+/blob/[^/]+/(?P<path>[^?#]+)$"),
    "Binder": re.compile(r"^https://mybinder\.org/v2/gh/[^?]+\?urlpath=lab/tree/(?P<path>[^&#]+)$"),
}


def launch_problems(links: list[str], is_chapter: bool) -> list[str]:
    """A chapter page needs a Colab and a Binder button, each opening a notebook (``.ipynb``)
    that exists in the repository (Colab cannot open a MyST Markdown file)."""
    problems = []
    for name, pattern in LAUNCH.items():
        paths = [m["path"] for m in map(pattern.match, links) if m]
        if not paths:
            problems += [f"no {name} button"] if is_chapter else []
        for path in paths:
            if not path.endswith(".ipynb") or not (ROOT / unquote(path)).is_file():
                problems.append(f"the {name} button opens {path}, which is not a notebook in the repository")
    return problems


SWITCH = re.compile(r'<div class="tlbook-lang[^"]*"[^>]*>(.*?)</div>', re.S)
HTML_LANG = re.compile(r"<html[^>]*\blang=\"([^\"]+)\"")


def language_problems(rel: str, dom: str) -> list[str]:
    """A book page declares its language (``zh-CN`` under ``book/zh/``, ``en`` elsewhere) and, under
    its title, links to the same page in the other language."""
    chinese = rel.startswith("book/zh/")
    expected = "zh-CN" if chinese else "en"
    declared = HTML_LANG.search(dom)
    problems = [] if declared and declared.group(1) == expected else [f'<html lang="{expected}"> missing']
    counterpart = rel.replace("book/zh/", "book/", 1) if chinese else rel.replace("book/", "book/zh/", 1)
    switch = SWITCH.search(dom)
    hrefs = re.findall(r'href="([^"#]+)', switch.group(1)) if switch else []
    targets = {urlparse(urljoin("http://site/" + rel, href)).path.lstrip("/") for href in hrefs}
    if counterpart not in targets:
        problems.append(f"no language switch to {counterpart}")
    return problems


GLYPHS = """(() => {
  const paragraphs = [...document.querySelectorAll('main p, p')];
  const text = paragraphs.find(p => /[\u4e00-\u9fff]/.test(p.textContent) && !p.closest('.tlbook-lang, .admonition'))
    || paragraphs[0];
  const c = document.createElement('canvas'); c.width = 64; c.height = 64;
  const g = c.getContext('2d');
  g.font = getComputedStyle(text).font.replace(/[0-9.]+px/, '40px');
  const shape = ch => { g.clearRect(0, 0, 64, 64); g.fillText(ch, 4, 48);
    return Array.from(g.getImageData(0, 0, 64, 64).data.filter((_, i) => i % 4 == 3), a => a > 127 ? 1 : 0).join(''); };
  const shapes = [...CHARS].map(shape);
  const cjk = (document.body.innerText.match(/[\u4e00-\u9fff]/g) || []).length;
  return {font: g.font, distinct: new Set(shapes).size, blank: shapes.filter(s => !s.includes('1')).length, cjk};
})()"""


async def _measure_glyphs(port: int, url: str, chars: str) -> dict:
    from cdp import open_tab

    page = await open_tab(port)
    await page.call("Page.navigate", url=url)
    await page.until("document.readyState == 'complete' && document.fonts.status == 'loaded'", 30)
    return await page.js(GLYPHS.replace("CHARS", repr(chars)))


def glyph_problems(binary: str, url: str, chars: str = "迁移学习卷积池化", profile_dir: str = "") -> list[str]:
    """Chinese text on the page at ``url`` renders with real glyphs: each of ``chars``, drawn in the
    font of the page's body text, has ink and a shape of its own. A missing glyph is drawn as the same
    empty box for every character (Chromium without a CJK font: install Debian's ``fonts-noto-cjk``)."""
    import asyncio

    from cdp import chromium, profile_folder

    with profile_folder() as tmp, chromium(binary, profile_dir or tmp) as port:
        found = asyncio.run(_measure_glyphs(port, url, chars))
    problems = [] if found["cjk"] >= 50 else [f"only {found['cjk']} Chinese characters on the page"]
    if found["blank"] or found["distinct"] < len(chars):
        problems.append(
            f"missing glyphs: {len(chars)} characters drew {found['distinct']} distinct shapes, {found['blank']} "
            f"blank, in {found['font']!r}. Fix: apt-get install fonts-noto-cjk"
        )
    return problems


def check_page(binary: str, site: Path, base: str, page: Path, shots: Path, profile: str) -> list[str]:
    rel = page.relative_to(site).as_posix()
    url = base + rel
    problems = []
    redirect = re.search(r'http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"', page.read_text(encoding="utf-8"), re.I)
    if redirect:  # index.html redirects to the root chapter: check the page the reader lands on
        target, _ = _local_file(site, base, redirect.group(1), url)
        if target is None or not target.exists():
            return [f"redirects to a missing page {redirect.group(1)}"]
        url, page = urljoin(url, redirect.group(1)), target
    shot = shots / (rel.replace("/", "__").removesuffix(".html") + ".png")
    _chromium(binary, profile, f"--screenshot={shot}", url)
    if not shot.exists() or shot.stat().st_size < 5000:
        problems.append("no screenshot (the page did not render)")
    dom = _chromium(binary, profile, "--dump-dom", url).stdout
    if "<body" not in dom:
        return problems + ["Chromium returned no page"]
    for marker in ERROR_MARKERS:
        if marker in dom:
            problems.append(f"shows error output ({marker!r})")
    if 'class="cell docutils container' in dom and "tlbook-provenance" not in dom:
        problems.append("a page with code cells but no provenance header (where its outputs came from)")
    parsed = _Page()
    parsed.feed(dom)
    for href in parsed.links:
        if href.startswith(("mailto:", "javascript:")):
            continue
        target, fragment = _local_file(site, base, href, url)
        if target is None:
            continue
        if not target.exists():
            problems.append(f"broken link {href}")
        elif fragment and target == page and fragment not in parsed.ids:
            problems.append(f"link to a missing anchor #{fragment}")
    problems += launch_problems(parsed.links, "tlbook-provenance" in dom)
    landed = page.relative_to(site).as_posix()
    if landed.startswith("book/"):
        problems += language_problems(landed, dom)
    for src in parsed.images:
        if src.startswith("data:"):
            try:
                payload = src.split(",", 1)[1]
                ok = len(base64.b64decode(payload) if ";base64" in src.split(",", 1)[0] else payload) > 100
            except Exception:
                ok = False
            if not ok:
                problems.append("an inline image that is empty or undecodable")
            continue
        target, _ = _local_file(site, base, src, url)
        if target is not None and (not target.exists() or target.stat().st_size == 0):
            problems.append(f"missing image {src}")
    return problems


def _report(name: str, problems: list[str]) -> bool:
    print(f"{'ok' if not problems else 'FAIL':4s} {name}")
    for problem in problems:
        print(f"     {problem}")
    return bool(problems)


def main(site_dir: str = str(ROOT / "_build" / "html")) -> int:
    site = Path(site_dir)
    if not (site / "index.html").exists():
        print(f"browser check: no website in {site}. Fix: run `make book` first")
        return 1
    from cdp import profile_folder

    binary = find_chromium()
    shots = ROOT / "_build" / "screenshots"
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    server, base = _serve(site)
    failures = 0
    try:
        with profile_folder() as profile:
            for page in pages(site):
                failures += _report(str(page.relative_to(site)), check_page(binary, site, base, page, shots, profile))
            zh_intro = "book/zh/intro.html"
            failures += _report(f"{zh_intro} (glyphs)", glyph_problems(binary, base + zh_intro))
    finally:
        server.shutdown()
    print(f"{len(pages(site))} pages checked, {failures} with problems; screenshots in {shots}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
