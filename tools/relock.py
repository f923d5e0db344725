"""Regenerates the dependency locks from pyproject.toml (``make lock``).

Two locks, one source of truth:
- ``requirements.txt``: what the container image and every pipeline step run with;
- ``requirements-test.txt``: the same pins plus the test extra, for ``make demo``/``make test``/CI.

The test lock is compiled under the runtime lock as a constraint, so a package pinned in
both has the same version in both: what the tests prove is what the image runs. Every
line carries sha256 hashes (pip's ``--require-hashes`` mode), so an install on a new
machine gets byte-for-byte the files that were locked, or fails.

Each lock's first line records a digest of the parts of pyproject.toml that decide the
resolution (python range, dependencies, extras, build requirements);
``tests/test_locks.py`` fails when pyproject.toml changes without a re-lock.

Run it with pip-tools installed (``make lock`` makes a throwaway venv for that). It
needs the package registries, unlike every other target.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = REPO / "requirements.txt"
TEST_LOCK = REPO / "requirements-test.txt"
DIGEST_PREFIX = "# pyproject-digest: sha256:"


def pyproject_digest(pyproject_text: str) -> str:
    """The sha256 of what in pyproject.toml decides the locked set (not its comments)."""
    data = tomllib.loads(pyproject_text)
    project = data["project"]
    decisive = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "build-system": data.get("build-system", {}).get("requires", []),
    }
    return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()


def recorded_digest(lock_path: Path) -> str | None:
    """The digest written on a lock's first line, or None when there is none."""
    first = lock_path.read_text(encoding="utf-8").splitlines()[:1]
    if first and first[0].startswith(DIGEST_PREFIX):
        return first[0][len(DIGEST_PREFIX):].strip()
    return None


def _pip_compile(output: Path, extra_args: list[str]) -> None:
    command = [
        sys.executable, "-m", "piptools", "compile", "--quiet", "--generate-hashes",
        "--allow-unsafe", "--strip-extras", "--no-emit-index-url", "--no-emit-find-links",
        "--no-emit-trusted-host", "--newline", "LF", "--output-file", str(output.relative_to(REPO)), *extra_args,
        "pyproject.toml",
    ]
    subprocess.run(command, cwd=REPO, check=True)


def _stamp(output: Path, digest: str) -> None:
    body = [line for line in output.read_text(encoding="utf-8").splitlines() if not line.startswith(DIGEST_PREFIX)]
    output.write_text("\n".join([DIGEST_PREFIX + digest, *body]) + "\n", encoding="utf-8")


def main() -> int:
    digest = pyproject_digest((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    # Compile from scratch (no --upgrade-package games): the locks say what resolves today.
    for lock in (RUNTIME_LOCK, TEST_LOCK):
        lock.unlink(missing_ok=True)
    _pip_compile(RUNTIME_LOCK, [])
    _stamp(RUNTIME_LOCK, digest)
    _pip_compile(TEST_LOCK, ["--extra", "test", "--constraint", str(RUNTIME_LOCK.relative_to(REPO))])
    _stamp(TEST_LOCK, digest)
    print(f"locked {RUNTIME_LOCK.relative_to(REPO)} and {TEST_LOCK.relative_to(REPO)} (pyproject sha256 {digest[:12]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
