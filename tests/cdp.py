"""A very small Chrome DevTools Protocol client, enough to drive headless Chromium in tests.

Why this exists: the replay and studio pages are scripts; checking them means loading them in a
real browser, clicking, and reading what the page shows, and noticing any console error. The
browser is the distribution's Chromium (never one downloaded by a Python package). It is
started with `--remote-debugging-port=0` and a fresh profile; the port it picked is read from
`DevToolsActivePort` in the profile folder, and the page's target is driven over aiohttp's
websocket client with JSON messages: `Page.navigate`, `Runtime.evaluate`, and the
`Runtime.consoleAPICalled` / `Runtime.exceptionThrown` / `Network.requestWillBeSent` events,
which are collected so a test can assert there were no errors and no network requests.

Loopback only: Chromium listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium() -> str:
    """The Chromium binary; skip without one, except under CI (which installs it): fail."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed: apt-get install chromium (.ci/run does)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return CHROMIUM


class Browser:
    """One headless Chromium with one page. Use `async with Browser() as b:`."""

    def __init__(self, width: int = 1400, height: int = 1000) -> None:
        self.size = (width, height)
        self.profile = tempfile.TemporaryDirectory(prefix="medbft-cdp-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._id = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self.console: list[dict[str, Any]] = []   # Runtime.consoleAPICalled params
        self.exceptions: list[dict[str, Any]] = []  # Runtime.exceptionThrown params
        self.requests: list[str] = []   # URLs of Network.requestWillBeSent

    async def __aenter__(self) -> Browser:
        profile = Path(self.profile.name)
        self.proc = subprocess.Popen(
            [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu",
             "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={profile}", f"--window-size={self.size[0]},{self.size[1]}",
             "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("Chromium did not start (no DevToolsActivePort)")
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://127.0.0.1:{port}/json/list") as res:
            targets = await res.json(content_type=None)
        page = next(t for t in targets if t.get("type") == "page")
        self.ws = await self.session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        for domain in ("Page", "Runtime", "Network"):
            await self.send(f"{domain}.enable")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Chromium's helper processes (crash handler, utility) can still be writing into the
        # profile for a moment after the browser exits: retry, then give up on a leftover.
        for _ in range(50):
            try:
                self.profile.cleanup()
                return
            except OSError:
                await asyncio.sleep(0.1)
        shutil.rmtree(self.profile.name, ignore_errors=True)

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    fut.set_result(data)
            elif data.get("method") == "Runtime.consoleAPICalled":
                self.console.append(data["params"])
            elif data.get("method") == "Runtime.exceptionThrown":
                self.exceptions.append(data["params"])
            elif data.get("method") == "Network.requestWillBeSent":
                self.requests.append(data["params"]["request"]["url"])

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One command; its result (raises on a protocol error)."""
        assert self.ws is not None
        self._id += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._id] = fut
        await self.ws.send_str(json.dumps({"id": self._id, "method": method, "params": params}))
        reply = await asyncio.wait_for(fut, 60)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    async def goto(self, url: str, ready: str = "document.readyState === 'complete'") -> None:
        """Open `url` and wait until the expression `ready` is true in the page."""
        await self.send("Page.navigate", url=url)
        await self.wait_for(ready)

    async def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise)."""
        res = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                              awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60) -> Any:
        """Poll until `expression` is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = await self.eval(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            await asyncio.sleep(0.1)

    def errors(self) -> list[str]:
        """Console errors and uncaught exceptions so far, as text."""
        out = [" ".join(str(a.get("value", a.get("description", ""))) for a in c["args"])
               for c in self.console if c.get("type") in ("error", "assert")]
        out += [e["exceptionDetails"].get("exception", {}).get("description", "")
                or e["exceptionDetails"].get("text", "") for e in self.exceptions]
        return out
