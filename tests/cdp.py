"""A headless Chromium tab driven over the DevTools protocol (a websocket), for checks that need
a running page: a double-click in JupyterLab, JavaScript that measures how text renders.

Used by ``lab_check.py`` and ``browser_check.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import time
import urllib.request


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


@contextlib.contextmanager
def chromium(binary: str, profile_dir: str, window: str = "1400,1000"):
    """A headless Chromium with its DevTools port open on loopback; yields the port."""
    port = free_port()
    process = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--remote-debugging-port={port}",
         f"--user-data-dir={profile_dir}", f"--window-size={window}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)
