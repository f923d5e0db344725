"""No google-cloud-storage call outside the storage layer (issue 22, item 4).

``components/checkpoint/`` (``storage.py``: ``Folder``/``open_folder``) is the one place
that talks to Cloud Storage, so its timeouts, retries, error translation and generation
preconditions apply to every read, write, copy and listing. This walks the AST of every
module of the installed package (the roots ``setup.py`` maps) and fails, naming the file
and line, on: an import of google-cloud-storage (or its transport, or aiplatform's own GCS
helpers), an import of the raw ``storage_client`` out of the layer, or a call of a
google-cloud-storage method (``list_blobs``, ``blob``, ``copy_blob``, ...) — the way code
that holds a ``GcsFolder``'s ``client``/``bucket`` reaches past it.

An exception is one (file, what) pair with its reason; one that no longer matches
anything fails too, so the list only shrinks. Tests and benchmarks are not package
sources: they seed fake-gcs-server with the real client on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STORAGE_LAYER = "components/checkpoint/"

FORBIDDEN_MODULES = ("google.cloud.storage", "google.resumable_media", "google.cloud.aiplatform.utils.gcs_utils")
# google-cloud-storage's Client/Bucket/Blob methods that move or list bytes.
STORAGE_METHODS = frozenset({
    "list_blobs", "get_blob", "blob", "copy_blob", "rename_blob", "delete_blobs", "get_bucket", "lookup_bucket",
    "create_bucket", "compose", "rewrite", "download_as_bytes", "download_as_string", "download_as_text",
    "download_to_filename", "download_to_file", "upload_from_string", "upload_from_filename", "upload_from_file",
    "generate_signed_url",
})
RAW_CLIENT = "storage_client"

ALLOWED: dict[tuple[str, str], str] = {}  # none left: every package module goes through the layer


def _package_roots() -> tuple[str, ...]:
    """The roots setup.py maps to ``tune2serve.<root>`` (read, not run)."""
    for node in ast.parse((REPO / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PACKAGE_ROOTS" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("setup.py: no PACKAGE_ROOTS")


def _forbidden_module(module: str) -> str | None:
    return next((m for m in FORBIDDEN_MODULES if module == m or module.startswith(m + ".")), None)


def violations(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, what) for every way ``source`` reaches Cloud Storage past the layer."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, m) for alias in node.names if (m := _forbidden_module(alias.name))]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                m = _forbidden_module(node.module) or _forbidden_module(f"{node.module}.{alias.name}")
                if m:
                    found.append((node.lineno, m))
                elif alias.name == RAW_CLIENT and node.module.endswith("checkpoint.storage"):
                    found.append((node.lineno, RAW_CLIENT))
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in STORAGE_METHODS:
                found.append((node.lineno, func.attr))
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str) and (m := _forbidden_module(node.args[0].value)):
                found.append((node.lineno, m))
    return sorted(found)


def _package_violations() -> dict[tuple[str, str], list[int]]:
    found: dict[tuple[str, str], list[int]] = {}
    for root in _package_roots():
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith(STORAGE_LAYER):
                continue
            for line, what in violations(path.read_text(encoding="utf-8"), rel):
                found.setdefault((rel, what), []).append(line)
    return found


def test_no_module_outside_the_storage_layer_reaches_cloud_storage() -> None:
    found = _package_violations()
    unexplained = [f"{rel}:{lines[0]}: {what}" for (rel, what), lines in found.items() if (rel, what) not in ALLOWED]
    assert not unexplained, (
        "Cloud Storage reached past components/checkpoint/storage.py (use open_folder / Folder, "
        "adding what it lacks there):\n  " + "\n  ".join(unexplained))


def test_every_exception_still_matches_something() -> None:
    """An exception whose code is gone must go too: the list only shrinks."""
    found = _package_violations()
    stale = [f"{rel}: {what}" for (rel, what) in ALLOWED if (rel, what) not in found]
    assert not stale, ("no longer needed: remove from ALLOWED in tests/checkpoint/test_storage_boundary.py "
                       "(the code they excused is gone):\n  " + "\n  ".join(stale))


@pytest.mark.parametrize(("source", "expected"), [
    ("from google.cloud import storage", "google.cloud.storage"),
    ("import google.cloud.storage as gcs", "google.cloud.storage"),
    ("from google.cloud.storage.retry import DEFAULT_RETRY", "google.cloud.storage"),
    ("from google.cloud.storage import transfer_manager", "google.cloud.storage"),
    ("from google.resumable_media import requests", "google.resumable_media"),
    ("from google.cloud.aiplatform.utils import gcs_utils", "google.cloud.aiplatform.utils.gcs_utils"),
    ("import importlib\nimportlib.import_module('google.cloud.storage')", "google.cloud.storage"),
    ("from tune2serve.components.checkpoint.storage import open_folder, storage_client", RAW_CLIENT),
    ("def f(folder):\n    return folder.client.list_blobs(folder.bucket_name)", "list_blobs"),
    ("def f(folder, key):\n    folder.bucket.blob(key).upload_from_string(b'x')", "blob"),
])
def test_the_check_sees_each_way_in(source: str, expected: str) -> None:
    assert expected in [what for _line, what in violations(source)]


@pytest.mark.parametrize("source", [
    "from google.cloud import aiplatform",
    "from google.cloud.aiplatform.utils import resource_manager_utils",
    "from tune2serve.components.checkpoint.storage import open_folder\nopen_folder('gs://b/p').list()",
    "from google.api_core import exceptions",
])
def test_the_check_passes_what_is_not_cloud_storage(source: str) -> None:
    assert violations(source) == []
