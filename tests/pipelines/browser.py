"""Headless Chromium for the report tests: a screenshot and the DOM after rendering, a
pure-Python PNG decoder (zlib + scanline filters) to tell a page from a blank one, and
``Session``: JavaScript evaluated in the rendered page (computed styles, the SVG's laid-out
text and boxes) over the DevTools protocol on a pipe (``--remote-debugging-pipe``: fd 3
in, fd 4 out, NUL-terminated JSON; no port, no extra package)."""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(args: list[str], profile: Path, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    exe = chromium()
    assert exe is not None
    return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def screenshot(page: Path, png: Path, profile: Path, size: str = "1200,900") -> Path:
    proc = _run([f"--screenshot={png}", f"--window-size={size}", page.resolve().as_uri()], profile)
    assert png.is_file(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return png


def dump_dom(page: Path, profile: Path) -> str:
    proc = _run(["--dump-dom", page.resolve().as_uri()], profile)
    assert proc.returncode == 0 and proc.stdout, f"chromium --dump-dom failed: {proc.stderr[-2000:]}"
    return proc.stdout


class Session:
    """One headless Chromium driven over the DevTools protocol: ``open(page)`` loads a file
    and waits for its load event, ``evaluate(js)`` returns the expression's JSON value.
    A context manager; the browser is closed (and reaped) on exit."""

    def __init__(self, profile: Path, timeout: float = 60.0) -> None:
        exe = chromium()
        assert exe is not None
        self.timeout, self._next, self._buffer, self.session = timeout, 0, b"", ""
        to_child, self._out = os.pipe()
        self._in, from_child = os.pipe()
        # dup2 onto 3 and 4 must not clobber a source that already sits there
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_child, from_child)]
        os.close(to_child)
        os.close(from_child)
        null = os.open(os.devnull, os.O_RDWR)
        args = [exe, *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]
        self.pid = os.posix_spawn(exe, args, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1), (os.POSIX_SPAWN_DUP2, null, 2),
            (os.POSIX_SPAWN_DUP2, high[0], 3), (os.POSIX_SPAWN_DUP2, high[1], 4)])
        for fd in (*high, null):
            os.close(fd)
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")

    def _send(self, message: dict[str, Any]) -> None:
        os.write(self._out, json.dumps(message).encode() + b"\0")

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._in], [], [], max(0.0, left))
            assert ready, "chromium did not answer over the DevTools pipe in time"
            chunk = os.read(self._in, 1 << 16)
            assert chunk, "chromium closed the DevTools pipe"
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)  # type: ignore[no-any-return]

    def call(self, method: str, params: dict[str, Any] | None = None, *, until_event: str = "") -> dict[str, Any]:
        """Sends one command and returns its result; with ``until_event``, also waits for
        that event of this page (after the command was sent)."""
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        self._send(message)
        deadline, result, seen = time.monotonic() + self.timeout, None, not until_event
        while result is None or not seen:
            got = self._receive(deadline)
            if got.get("id") == self._next:
                assert "error" not in got, f"{method}: {got['error']}"
                result = got["result"]
            elif until_event and got.get("method") == until_event and got.get("sessionId") == self.session:
                seen = True
        return result

    def open(self, page: Path) -> None:
        """Loads ``page`` and returns once its document is complete (a load event of the
        blank page before it cannot be mistaken for this one: the URL is checked too)."""
        uri = page.resolve().as_uri()
        self.call("Page.navigate", {"url": uri}, until_event="Page.loadEventFired")
        deadline = time.monotonic() + self.timeout
        while self.evaluate("[document.readyState, location.href]") != ["complete", uri]:
            assert time.monotonic() < deadline, f"{page} did not finish loading"
            time.sleep(0.05)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of ``expression`` in the page; a JavaScript exception fails the test."""
        got = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        assert "exceptionDetails" not in got, f"{expression[:200]}: {got['exceptionDetails']}"
        return got["result"].get("value")

    def close(self) -> None:
        """Asks the browser to close, kills it (by its pid) if it has not exited in 10 s, reaps it."""
        self.session = ""
        try:
            self.call("Browser.close")
        except (AssertionError, OSError):
            pass  # it may close the pipe before it answers
        deadline = time.monotonic() + 10
        while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
                break
            time.sleep(0.05)
        os.close(self._in)
        os.close(self._out)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Image:
    width: int
    height: int
    pixels: list[tuple[int, int, int]]  # row-major RGB

    def non_white_fraction(self, threshold: int = 245) -> float:
        dark = sum(1 for p in self.pixels if min(p) < threshold)
        return dark / len(self.pixels)

    def distinct_colours(self) -> int:
        return len(set(self.pixels))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def decode_png(data: bytes) -> Image:
    """Decodes an 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unsupported PNG {header}"
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                line[i] = (line[i] + _paeth(a, b, c)) & 0xFF
        pixels.extend(tuple(line[x:x + 3]) for x in range(0, stride, bpp))  # type: ignore[misc]
        prev = line
    return Image(width, height, pixels)
