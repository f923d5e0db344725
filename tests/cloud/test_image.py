"""The component image recipe, checked statically (no Docker engine here): the Dockerfile
installs exactly the runtime lock (hash-checked, nothing resolved at build time), then the
package itself adding nothing; the lock's kfp is the one the compiled spec names and the
steps run with; it runs as non-root and leaves no build tools in the final stage;
.dockerignore keeps everything else out (the local stack, the demo and the tests too); the
package made from that context holds the steps alone, and nothing they run imports the
local stack or the demo."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
import zipfile
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


def _dockerignore() -> list[str]:
    return [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")]


def test_dockerignore_lets_in_the_sources_and_nothing_else() -> None:
    patterns = _dockerignore()
    for needed in ("pyproject.toml", "setup.py", "README.md", "requirements.txt", "components/errors.py", "cli/main.py",
                   "cli/commands/validate.py", "pipelines/promote.py", "components/validate/supported_models.json"):
        assert not _ignored(needed, patterns), needed
    for kept_out in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "compiled/promote_checkpoint.yaml",
                     ".tune2serve/stack.json", "components/__pycache__/errors.cpython-311.pyc", "bench/run.py",
                     "localstack/tls/ca.key", "localstack/stack.py", "demo/tiny_models.py",
                     "tests/fixtures/broken_models.py", "requirements-test.txt", "tools/relock.py",
                     "components/export/merge/_lora_rows.cpython-311-x86_64-linux-gnu.so"):  # an editable build's
        assert _ignored(kept_out, patterns), kept_out


def test_every_copied_source_exists() -> None:
    for name in ("pyproject.toml", "setup.py", "README.md", "requirements.txt", "components", "pipelines", "cli"):
        assert (REPO / name).exists(), f"the Dockerfile copies {name}, which is missing"


@pytest.mark.timeout(300)
def test_the_build_context_makes_a_package_of_the_steps_alone(tmp_path: Path) -> None:
    """setup.py on what `docker build` receives (no localstack/, demo/, tests/): the package
    builds, and holds components, pipelines and cli and nothing else."""
    context = tmp_path / "context"
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in tracked:
        if (REPO / rel).is_file() and not _ignored(rel, _dockerignore()):
            (context / rel).parent.mkdir(parents=True, exist_ok=True)
            (context / rel).write_bytes((REPO / rel).read_bytes())
    assert not (context / "localstack").exists() and (context / "cli").is_dir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(tmp_path / "wheel"), str(context)], check=True, capture_output=True)
    [wheel] = (tmp_path / "wheel").glob("tune2serve-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.split("/")[1] for n in names if n.startswith("tune2serve/")}
    assert packages == {"components", "pipelines", "cli"}, packages
    assert {"tune2serve/cli/main.py", "tune2serve/pipelines/promote.py",
            "tune2serve/components/validate/supported_models.json"} <= set(names)
    # the export's LoRA merge kernel, compiled from lora_rows.c by the build (the image's build stage has gcc)
    assert any(n.startswith("tune2serve/components/export/merge/_lora_rows.") and n.endswith(".so") for n in names), names


# The image carries neither the local stack nor the demo: nothing it runs may import them
# when it is imported (the `local` verb's module does, and the CLI reports that verb as
# not available in such a build).
_WITHOUT_LOCAL_STACK = """
import contextlib, importlib, io, json, pkgutil, sys, tempfile
from importlib.abc import MetaPathFinder

class Absent(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[:2] in (["tune2serve", "localstack"], ["tune2serve", "demo"]):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Absent())
failed = {}
for package in ("components", "pipelines", "cli"):
    root = importlib.import_module(f"tune2serve.{package}")
    for module in pkgutil.walk_packages(root.__path__, f"tune2serve.{package}."):
        try:
            importlib.import_module(module.name)
        except ModuleNotFoundError as e:
            failed[module.name] = str(e)
from tune2serve.cli.main import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    try:
        main(["--help"])
    except SystemExit as e:
        assert e.code == 0, e.code
assert "usage: tune2serve" in out.getvalue()
with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()):
    assert main(["compile", "--output", d + "/p.yaml"]) == 0
with contextlib.redirect_stderr(io.StringIO()) as err:
    assert main(["local"]) == 2
assert "not available in this build" in err.getvalue(), err.getvalue()
print(json.dumps(failed))
"""


@pytest.mark.timeout(300)
def test_what_the_image_runs_imports_no_local_stack_or_demo() -> None:
    proc = subprocess.run([sys.executable, "-c", _WITHOUT_LOCAL_STACK], capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == {
        "tune2serve.cli.commands.local": "No module named 'tune2serve.localstack'"}
