"""The component image recipe, checked statically (no Docker engine here): the Dockerfile
installs exactly the runtime lock (hash-checked, nothing resolved at build time), then the
package itself adding nothing; the lock's kfp is the one the compiled spec names and the
steps run with; it runs as non-root and leaves no build tools in the final stage;
.dockerignore keeps everything else out."""

from __future__ import annotations

import fnmatch
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_TOOLS = {"build-essential", "gcc", "g++", "make", "clang", "cmake", "python3-dev", "libc6-dev"}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [a for k, a in self.instructions if k == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) with continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") and not pending:
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        if line.strip():
            logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None))
        elif stages:
            stages[-1].instructions.append((keyword, rest))
        elif keyword == "ARG":
            name, _, default = rest.partition("=")
            global_args[name] = default
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile((REPO / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _stage_args(stage: Stage) -> dict[str, str]:
    return dict(a.partition("=")[::2] for a in stage.args("ARG"))


def _pip_installs(stage: Stage) -> list[list[str]]:
    """The argument lists of every `pip install` in the stage's RUN lines, ARGs expanded."""
    args = _stage_args(stage)
    out = []
    for run in stage.args("RUN"):
        for command in re.split(r"&&|;", run):
            words = shlex.split(re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), command))
            if words[:2] == ["pip", "install"]:
                out.append(words[2:])
    return out


def test_multi_stage_with_a_slim_python_matching_requires_python(dockerfile, pyproject) -> None:
    global_args, stages = dockerfile
    assert len(stages) >= 2 and stages[0].name == "build"
    base = global_args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", base), base
    assert pyproject["requires-python"] == ">=3.11,<3.12"
    assert {s.base for s in stages} == {"${PYTHON_IMAGE}"}  # same base: the venv copies across


RUNTIME_LOCK = REPO / "requirements.txt"


def _locked_version(name: str) -> str:
    [version] = re.findall(rf"^{re.escape(name)}==(\S+) ", RUNTIME_LOCK.read_text(), flags=re.M)
    return version


def test_the_build_installs_the_runtime_lock_then_the_package_alone(dockerfile) -> None:
    build = dockerfile[1][0]
    installs = _pip_installs(build)
    assert len(installs) == 2, installs
    lock_install, package_install = installs
    assert lock_install[-2:] == ["-r", "requirements.txt"]
    assert {"--require-hashes", "--no-deps"} <= set(lock_install)
    assert "--index-url" not in lock_install  # PyPI stays the index; the CPU index is an extra
    assert package_install == ["--no-deps", "--no-build-isolation", "."]
    copies = build.args("COPY")
    assert copies.index("requirements.txt ./requirements.txt") < copies.index("pyproject.toml setup.py README.md ./")
    assert copies[1:] == ["pyproject.toml setup.py README.md ./", "components ./components", "pipelines ./pipelines",
                          "cli ./cli"]
    assert "pip check" in " ".join(build.args("RUN"))


def test_torch_is_the_locked_cpu_build_from_the_cpu_index(dockerfile, pyproject) -> None:
    build = dockerfile[1][0]
    [lock_install] = [w for w in _pip_installs(build) if "requirements.txt" in w]
    index = lock_install[lock_install.index("--extra-index-url") + 1]
    assert index == "https://download.pytorch.org/whl/cpu"
    assert _locked_version("torch") == "2.13.0+cpu"
    assert "torch==2.13.0" in pyproject["dependencies"]


def test_the_image_kfp_is_the_lock_and_the_compiled_spec_names_it(dockerfile) -> None:
    from importlib.metadata import version

    assert "KFP_VERSION" not in _stage_args(dockerfile[1][0]), "kfp comes from the lock, not a hand-kept ARG"
    locked = _locked_version("kfp")
    assert version("kfp") == locked  # this environment was installed from the same lock
    compiled = (REPO / "compiled" / "promote_checkpoint.yaml").read_text()
    assert re.search(rf"^sdkVersion: kfp-{re.escape(locked)}$", compiled, flags=re.M)
    assert "pip install" not in compiled  # the steps run the image's kfp; they install nothing


def test_the_final_stage_runs_as_non_root_with_no_build_tools(dockerfile) -> None:
    final = dockerfile[1][-1]
    [user] = final.args("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert final.args("WORKDIR") == ["/home/tune2serve"]
    assert final.args("COPY") == ["--from=build /opt/venv /opt/venv"]
    final_runs = " ".join(final.args("RUN"))
    assert "apt-get install" not in final_runs and "pip install" not in final_runs
    assert not BUILD_TOOLS & set(final_runs.split())
    env = " ".join(final.args("ENV"))
    assert "PATH=/opt/venv/bin:$PATH" in env and "HF_HUB_OFFLINE=1" in env


def _ignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for this file: the last matching pattern wins; '!' re-includes."""
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        candidates = [rel] + ["/".join(rel.split("/")[:i]) for i in range(1, rel.count("/") + 1)]
        if any(fnmatch.fnmatch(c, pat) or fnmatch.fnmatch(c, pat.replace("**/", "*/")) or
               (pat.startswith("**/") and fnmatch.fnmatch(c.rsplit("/", 1)[-1], pat[3:])) for c in candidates):
            verdict = not negate
    return verdict


def test_dockerignore_lets_in_the_sources_and_nothing_else() -> None:
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]
    for needed in ("pyproject.toml", "setup.py", "README.md", "requirements.txt", "components/errors.py", "cli/main.py",
                   "components/validate/supported_models.json"):
        assert not _ignored(needed, patterns), needed
    for kept_out in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "compiled/promote_checkpoint.yaml",
                     ".tune2serve/stack.json", "components/__pycache__/errors.cpython-311.pyc", "bench/run.py",
                     "localstack/tls/ca.key", "requirements-test.txt", "tools/relock.py"):
        assert _ignored(kept_out, patterns), kept_out


def test_every_copied_source_exists() -> None:
    for name in ("pyproject.toml", "setup.py", "README.md", "requirements.txt", "components", "pipelines", "cli"):
        assert (REPO / name).exists(), f"the Dockerfile copies {name}, which is missing"
