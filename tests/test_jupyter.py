"""A real Jupyter server serving the chapters, as a reader's JupyterLab talks to it.

The server runs from this environment on 127.0.0.1 with a token. Through its REST API we ask
for a chapter (a MyST Markdown file) as a notebook, which jupytext's contents manager provides,
then start a kernel and execute the chapter's first cells over the kernel's websocket (the
Jupyter messaging protocol), in the smoke profile.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "book/first_transfer.md"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, tmp_path: Path) -> None:
        self.port, self.token = _free_port(), secrets.token_hex(16)
        env = {**os.environ, "TLBOOK_PROFILE": "smoke", "TLBOOK_PROGRESS": "0", "JUPYTER_RUNTIME_DIR": str(tmp_path)}
        self.log = (tmp_path / "server.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={ROOT}",
             *(["--allow-root"] if os.geteuid() == 0 else [])],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
        )
        req.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(req, timeout=30) as response:
            text = response.read().decode()
        return json.loads(text) if text else {}

    def wait(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"jupyter server exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                self.request("GET", "/api/status")
                return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("jupyter server did not answer within a minute")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def _execute_request(code: str, session: str) -> dict:
    header = {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "username": "test", "session": session,
              "date": "", "version": "5.3"}  # fmt: skip
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
    return {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}


async def _run_cells(url: str, cells: list[str], timeout: float) -> list[tuple[str, str]]:
    """Execute ``cells`` one by one over the kernel's websocket; ``(kind, text)`` of every output."""
    from tornado.websocket import websocket_connect

    connection = await websocket_connect(url)
    outputs, session = [], uuid.uuid4().hex
    try:
        for code in cells:
            request = _execute_request(code, session)
            await connection.write_message(json.dumps(request))
            while True:
                message = json.loads(await asyncio.wait_for(connection.read_message(), timeout))
                if message.get("parent_header", {}).get("msg_id") != request["header"]["msg_id"]:
                    continue
                kind, content = message["msg_type"], message["content"]
                if kind == "stream":
                    outputs.append(("stream", content["text"]))
                elif kind == "error":
                    outputs.append(("error", "\n".join(content["traceback"])))
                elif kind == "execute_reply":
                    break
    finally:
        connection.close()
    return outputs


@pytest.mark.slow
def test_a_jupyter_server_serves_a_chapter_as_a_notebook_and_runs_its_first_cells(tmp_path: Path):
    server = _Server(tmp_path)
    try:
        server.wait()
        notebook = server.request("GET", f"/api/contents/{CHAPTER}?type=notebook&content=1")
        assert notebook["type"] == "notebook" and notebook["content"]["nbformat"] == 4
        code = [c["source"] for c in notebook["content"]["cells"] if c["cell_type"] == "code"]
        assert len(code) >= 5 and "companion.start_chapter" in "".join(code[:2])  # the chapter's own cells
        kernel = server.request("POST", "/api/kernels", {"name": "python3"})
        url = f"ws://127.0.0.1:{server.port}/api/kernels/{kernel['id']}/channels?token={server.token}"
        # the chapter's cells run with book/ as working directory, as in JupyterLab
        setup = f"import os; os.chdir({str(ROOT / 'book')!r})"
        outputs = asyncio.run(_run_cells(url, [setup, *code[:2]], timeout=300))
        errors = [text for kind, text in outputs if kind == "error"]
        assert errors == [], errors[0][-2000:] if errors else ""
        printed = "".join(text for _, text in outputs)
        assert "profile 'smoke'" in printed and "device" in printed
        server.request("DELETE", f"/api/kernels/{kernel['id']}")
    finally:
        server.stop()
