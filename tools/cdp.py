"""A headless Chromium tab driven over the DevTools protocol (a websocket), for checks that need
a running page: a double-click in JupyterLab, JavaScript that measures how text renders.

Used by ``lab_check.py`` and ``browser_check.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float) -> bytes:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return urllib.request.urlopen(url, timeout=5).read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


class Page:
    """One Chromium tab."""

    def __init__(self, socket) -> None:
        self.socket, self.next_id = socket, 0

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        await self.socket.write_message(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(await self.socket.read_message())
            if message.get("id") == self.next_id:
                return message.get("result", message)

    async def js(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    async def until(self, expression: str, seconds: float):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            value = await self.js(expression)
            if value:
                return value
            await asyncio.sleep(0.5)
        return None


async def open_tab(chromium_port: int) -> Page:
    """The first tab of the Chromium listening on ``chromium_port``."""
    from tornado.websocket import websocket_connect

    targets = json.loads(wait_for(f"http://127.0.0.1:{chromium_port}/json", 30))
    tab = next(t for t in targets if t["type"] == "page")
    return Page(await websocket_connect(tab["webSocketDebuggerUrl"], max_message_size=64 * 2**20))


def _processes_using(folder: str) -> list[int]:
    """Process ids whose command line names ``folder`` (Chromium and its helpers: renderers,
    zygote, crashpad handler all carry the profile path)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if folder.encode() in (entry / "cmdline").read_bytes() and int(entry.name) != os.getpid():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def stop_processes_using(folder: str, seconds: float = 15.0) -> None:
    """SIGTERM every process that names ``folder``, wait for them to exit, SIGKILL what is left."""
    deadline, sig = time.monotonic() + seconds, signal.SIGTERM
    while pids := _processes_using(folder):
        if time.monotonic() > deadline:
            sig = signal.SIGKILL
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        time.sleep(0.2)


@contextlib.contextmanager
def profile_folder():
    """A fresh Chromium profile folder; removed only once no process uses it any more (a dying
    Chromium still writes to ``Default/``), and removal tolerates what such a process leaves."""
    folder = tempfile.mkdtemp(prefix="tlbook-chromium-")
    try:
        yield folder
    finally:
        stop_processes_using(folder)
        for _ in range(5):
            shutil.rmtree(folder, ignore_errors=True)
            if not os.path.exists(folder):
                break
            time.sleep(0.5)


@contextlib.contextmanager
def chromium(binary: str, profile_dir: str, window: str = "1400,1000"):
    """A headless Chromium with its DevTools port open on loopback; yields the port. On exit the
    browser and every helper process it started have stopped."""
    port = free_port()
    process = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--remote-debugging-port={port}",
         f"--user-data-dir={profile_dir}", f"--window-size={window}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        stop_processes_using(profile_dir)
