"""Runs inside the vLLM environment (its own python: vLLM, its torch and transformers;
nothing of tune2serve is importable there). Reads a batch of jobs as JSON from the file
named by argv[1] and writes one JSON result per job to the file named by argv[2], a line
each, flushed as soon as it is known: a crash part-way still leaves the results before it.

Job kinds:

* ``vllm``: ``vllm.LLM`` in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
  ``enforce_eager``, a small ``max_model_len``, the job's ``compilation_config``: the local
  stack's, see ``localstack/serving.py``) on the folder — the offline engine loads
  in seconds where the OpenAI server takes most of a minute. Several folders are loaded
  one after another in one process (vLLM loads are the suite's cost), each engine torn
  down before the next. Result: ``loaded`` or vLLM's own error text, then per prompt the
  greedy tokens with vLLM's top logprobs and finish reason, and one chat request (the
  chat/completions path: the chat template applied by vLLM's renderer).
* ``transformers``: the greedy reference from the transformers of the same environment
  (the one vLLM itself reads configs with), in float32, one forward per step, recording
  the top-two logit margin of every step (the tolerance rule needs it).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback
from typing import Any

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _error_text(e: BaseException) -> str:
    """vLLM's own words: the exception and its causes, one line each, innermost last."""
    parts, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts.append(f"{type(e).__name__}: {str(e).strip()[:2000]}")
        e = e.__cause__ or e.__context__
    return " <- ".join(parts)


def _cleanup() -> None:
    try:
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
    except Exception:  # noqa: BLE001 - a failed load may leave nothing to clean
        pass
    gc.collect()


def _versions() -> dict[str, str]:
    import torch
    import transformers
    import vllm

    return {"vllm": vllm.__version__, "transformers": transformers.__version__, "torch": torch.__version__}


def run_vllm(job: dict[str, Any]) -> dict[str, Any]:
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    kwargs: dict[str, Any] = {"model": job["folder"], "enforce_eager": True, "max_model_len": job.get("max_model_len", 256),
                              "dtype": job.get("dtype", "auto"), "seed": 0, "max_num_seqs": 4,
                              "gpu_memory_utilization": 0.05}
    if job.get("compilation_config"):
        kwargs["compilation_config"] = job["compilation_config"]
    if job.get("text_only"):
        kwargs["limit_mm_per_prompt"] = {"image": 0, "video": 0}
    try:
        llm = LLM(**kwargs)
    except BaseException as e:  # noqa: BLE001 - vLLM's refusal is the result
        _cleanup()
        return {"loaded": False, "error": _error_text(e), "load_s": round(time.perf_counter() - started, 2)}
    out: dict[str, Any] = {"loaded": True, "load_s": round(time.perf_counter() - started, 2), "prompts": []}
    try:
        params = SamplingParams(temperature=0.0, max_tokens=job["max_tokens"], logprobs=2,
                                ignore_eos=job.get("ignore_eos", True))
        for ids in job["prompts"]:
            try:
                res = llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)[0].outputs[0]
                top = [{str(k): v.logprob for k, v in step.items()} for step in (res.logprobs or [])]
                out["prompts"].append({"tokens": list(res.token_ids), "top_logprobs": top,
                                       "finish_reason": res.finish_reason})
            except BaseException as e:  # noqa: BLE001
                out["prompts"].append({"error": _error_text(e)})
        if job.get("chat"):
            chat_params = SamplingParams(temperature=0.0, max_tokens=job.get("chat_max_tokens", job["max_tokens"]))
            try:
                res = llm.chat([job["chat"]], chat_params, use_tqdm=False)[0]
                out["chat"] = {"prompt_tokens": list(res.prompt_token_ids or []),
                               "tokens": list(res.outputs[0].token_ids), "finish_reason": res.outputs[0].finish_reason}
            except BaseException as e:  # noqa: BLE001
                out["chat"] = {"error": _error_text(e)}
    finally:
        del llm
        _cleanup()
    out["total_s"] = round(time.perf_counter() - started, 2)
    return out


def _load_reference(folder: str) -> Any:
    import torch
    import transformers

    errors = []
    for auto in ("AutoModelForCausalLM", "AutoModelForImageTextToText"):
        try:
            return getattr(transformers, auto).from_pretrained(folder, dtype=torch.float32).eval()
        except Exception as e:  # noqa: BLE001 - the next auto class may know it
            errors.append(_error_text(e))
    raise RuntimeError(" | ".join(errors))


def _logits(model: Any, ids: list[int]) -> Any:
    """Last-position logits. A multimodal class without images is asked through its
    language model where its own forward needs one (Llama-4 in transformers 5)."""
    import torch

    x = torch.tensor([ids])
    try:
        return model(input_ids=x).logits[0, -1].float()
    except Exception:  # noqa: BLE001
        inner = getattr(model, "language_model", None) or getattr(getattr(model, "model", None), "language_model")
        hidden = inner(input_ids=x)
        if hasattr(hidden, "logits"):
            return hidden.logits[0, -1].float()
        return model.lm_head(hidden.last_hidden_state)[0, -1].float()


def run_transformers(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    started = time.perf_counter()
    try:
        model = _load_reference(job["folder"])
    except BaseException as e:  # noqa: BLE001
        return {"loaded": False, "error": _error_text(e)}
    out: dict[str, Any] = {"loaded": True, "prompts": []}
    with torch.no_grad():
        for ids in job["prompts"]:
            seq, tokens, margins = list(ids), [], []
            for _ in range(job["max_tokens"]):
                logits = _logits(model, seq)
                top = torch.topk(logits, 2)
                tokens.append(int(top.indices[0]))
                margins.append(float(top.values[0] - top.values[1]))
                seq.append(tokens[-1])
            out["prompts"].append({"tokens": tokens, "margins": margins})
    out["total_s"] = round(time.perf_counter() - started, 2)
    return out


def main() -> int:
    jobs = json.loads(open(sys.argv[1], encoding="utf-8").read())
    with open(sys.argv[2], "w", encoding="utf-8") as sink:
        sink.write(json.dumps({"versions": _versions()}) + "\n")
        sink.flush()
        for job in jobs:
            try:
                result = run_vllm(job) if job["engine"] == "vllm" else run_transformers(job)
            except BaseException as e:  # noqa: BLE001 - one job's crash is its result, not the batch's
                result = {"loaded": False, "error": _error_text(e), "crash": traceback.format_exc()[-4000:]}
            sink.write(json.dumps({"id": job["id"], **result}) + "\n")
            sink.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
