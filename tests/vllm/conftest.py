"""Fixtures of the vLLM oracle tests: the tiny models of every architecture, exported,
and one vLLM batch per session for all of them (vLLM loads are the cost).

The whole architecture × mutation matrix runs with ``TUNE2SERVE_VLLM_MATRIX=1``
(``make test-vllm``); the default suite runs every architecture unmutated and every
mutation on one architecture (``MUTATION_ARCHITECTURES``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.vllm import models
from tests.vllm.runner import Batch, missing_reason, run_batch

MATRIX = os.environ.get("TUNE2SERVE_VLLM_MATRIX") == "1"
DEFAULT_MUTATION_ARCHITECTURES = ("llama",)
PROMPTS = [[5, 17, 33, 40, 99, 150, 7, 64], [120, 3, 250, 11], [300, 42, 42, 8, 200, 17]]
MAX_TOKENS = 12
CHAT = [{"role": "user", "content": "the capital of france is <|extra_3|>"}]
CHAT_MAX_TOKENS = 16
END_OF_TURN = 2  # <|im_end|>: what the chat template ends a turn with


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vllm_matrix: the whole architecture × mutation matrix (make test-vllm)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if MATRIX:
        return
    skip = pytest.mark.skip(reason="the whole matrix runs under make test-vllm (TUNE2SERVE_VLLM_MATRIX=1)")
    for item in items:
        if "vllm_matrix" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def vllm_env() -> None:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.make_tokenizer(tmp_path_factory.mktemp("vllm-tokenizer"))


def _chat_ids(tokenizer_dir: Path) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    return list(tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=False))


def _ends_its_turn(model: Any, chat_ids: list[int]) -> None:
    """Makes the model end its chat turn within three tokens (the end-of-turn row of the
    output layer becomes 1.5 × the row of what it says third), so whether generation
    stops is observable: a random model would never emit <|im_end|>."""
    import torch

    head = model.get_output_embeddings().weight
    seq = list(chat_ids)
    with torch.no_grad():
        for _ in range(3):
            try:
                logits = model(input_ids=torch.tensor([seq])).logits[0, -1]
            except Exception:  # noqa: BLE001 - Llama-4's multimodal forward wants images: its language model
                logits = model.language_model(input_ids=torch.tensor([seq])).logits[0, -1]
            seq.append(int(logits.argmax()))
        head[END_OF_TURN] = head[seq[-1]] * 1.5


@pytest.fixture(scope="session")
def exports(vllm_env: None, tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> dict[str, dict[str, Path]]:
    """{architecture key: {"full": export, "lora": export}} for every spec."""
    root = tmp_path_factory.mktemp("vllm-models")
    chat_ids = _chat_ids(tokenizer_dir)
    out: dict[str, dict[str, Path]] = {}
    for key in models.SPECS:
        base = root / f"{key}-base"
        model = models.build_base(key, base, tokenizer_dir)
        _ends_its_turn(model, chat_ids)
        model.save_pretrained(base)
        full = models.export_full(base, root / f"{key}-full")
        lora = models.export_lora(key, base, model, root, root / f"{key}-lora")
        out[key] = {"full": full, "lora": lora}
    return out


def vllm_job(job_id: str, folder: Path, key: str) -> dict[str, Any]:
    """vLLM on ``folder`` with the local stack's CPU settings (its PyTorch rope: see
    ``localstack/serving.py``), so the oracle is the engine the stack serves with."""
    from tune2serve.localstack.serving import VLLM_CPU_KERNEL_BUGS

    return {"id": job_id, "engine": "vllm", "folder": str(folder), "prompts": PROMPTS, "max_tokens": MAX_TOKENS,
            "chat": CHAT, "chat_max_tokens": CHAT_MAX_TOKENS, "text_only": key in models.MULTIMODAL,
            "compilation_config": VLLM_CPU_KERNEL_BUGS}


def reference_job(job_id: str, folder: Path) -> dict[str, Any]:
    return {"id": job_id, "engine": "transformers", "folder": str(folder), "prompts": PROMPTS, "max_tokens": MAX_TOKENS}


@pytest.fixture(scope="session")
def parity_batch(exports: dict[str, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory) -> Batch:
    """The transformers reference and vLLM on every export, one engine process."""
    jobs: list[dict[str, Any]] = []
    for key, kinds in exports.items():
        for kind, folder in kinds.items():
            jobs.append(reference_job(f"{key}/{kind}/reference", folder))
            jobs.append(vllm_job(f"{key}/{kind}/vllm", folder, key))
    return run_batch(jobs, tmp_path_factory.mktemp("vllm-parity-batch"))
