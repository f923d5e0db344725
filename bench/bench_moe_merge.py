"""MoE expert merge benchmark: parameter-level LoRA on fused experts, streamed one expert
at a time, against references measured in the same run (medians of --runs).

A Mixtral-like base (bf16, the published on-disk layout ``block_sparse_moe.experts.N.w1``…)
is generated at each layer count (default 2 and 8, to show peak RSS stays flat as the
model grows), with the adapter PEFT 0.21 makes of ``target_modules="all-linear"`` there:
its keys and shapes are PEFT's own (``get_peft_model`` on the meta device), parameter-level
LoRA on ``experts.gate_up_proj`` / ``experts.down_proj`` included, random values. Printed:

* export (merge + write + fsync) in a child process: wall time and the child's peak RSS
  (``VmHWM``), also without torch's fixed costs (as ``bench_export.py``);
* reference A: ``cp -r`` of the base + ``sync`` (the same bytes, copied plainly);
* reference B, at the largest layer count (it is the slowest child: ~5 s of imports and
  loading): transformers + PEFT ``merge_and_unload()`` + ``save_pretrained`` (bf16);
* the ratios export / A and export / B, the peak RSS at each layer count, and what the
  layers added between the smallest and the largest cost export and cp (the fixed costs
  of starting Python, torch and transformers cancel out there).

The machine's load average is printed at the start and the end: on a shared machine,
compare ratios, not seconds.

Usage: python bench/bench_moe_merge.py [--layers 2 8] [--runs 3] [--no-reference-b]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_export import _load, run_cp, run_export, run_reference_b  # noqa: E402  (the same children and probes)

HIDDEN, INTER, EXPERTS, HEADS, KV_HEADS, VOCAB, RANK = 768, 1536, 8, 6, 2, 8000, 16


def _config(layers: int) -> dict:
    return {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": HIDDEN,
            "intermediate_size": INTER, "num_hidden_layers": layers, "num_attention_heads": HEADS,
            "num_key_value_heads": KV_HEADS, "num_local_experts": EXPERTS, "num_experts_per_tok": 2,
            "vocab_size": VOCAB, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
            "dtype": "bfloat16", "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2}


def generate(root: Path, layers: int) -> tuple[Path, Path, int]:
    """Writes the base and PEFT's all-linear adapter for it; returns both folders and
    the base's bytes."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file
    from transformers import MixtralConfig, MixtralForCausalLM
    from tune2serve.components.export.plan.weight_conversion import revert_weight_conversion

    base, adapter = root / "base", root / "adapter"
    base.mkdir(parents=True)
    adapter.mkdir()
    config = _config(layers)
    with torch.device("meta"):
        model = MixtralForCausalLM(MixtralConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type")}))
    torch.manual_seed(0)
    on_disk = revert_weight_conversion(model, dict(model.state_dict()))  # the published names and shapes
    save_file({n: (torch.randn(t.shape) * 0.02).to(torch.bfloat16) for n, t in on_disk.items()},
              str(base / "model.safetensors"), metadata={"format": "pt"})
    (base / "config.json").write_text(json.dumps(config))
    peft_model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=32, target_modules="all-linear"))
    lora = {k: torch.randn(v.shape) * 0.01 for k, v in get_peft_model_state_dict(peft_model).items()}
    assert any(".experts.base_layer.lora_A" in k for k in lora), "PEFT made no parameter-level expert LoRA"
    save_file(lora, str(adapter / "adapter_model.safetensors"), metadata={"format": "pt"})
    peft_model.peft_config["default"].save_pretrained(str(adapter))
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": str(base)}))
    return base, adapter, (base / "model.safetensors").stat().st_size


def bench_layers(layers: int, reference_b: bool, args: argparse.Namespace, scratch: Path) -> dict:
    med = statistics.median
    root = scratch / f"layers-{layers}"
    base, adapter, nbytes = generate(root, layers)
    runs, cps, refs = [], [], []
    for _ in range(args.runs):  # warm page cache throughout: the base was just written
        runs.append(run_export(adapter, root / "out"))
        shutil.rmtree(root / "out")
        cps.append(run_cp(base, root / "copy"))
        shutil.rmtree(root / "copy")
        if reference_b:
            refs.append(run_reference_b(base, adapter, root / "peft"))
            shutil.rmtree(root / "peft")
    row = {"layers": layers, "gb": nbytes / 1e9, "wall": med(r["wall"] for r in runs),
           "no_import": med(r["wall_no_import"] for r in runs), "rss": max(r["rss"] for r in runs), "cp": med(cps),
           "peft": med(w for w, _ in refs) if refs else None, "peft_rss": max(r for _, r in refs) if refs else None}
    peft = (f"  reference B (PEFT merge_and_unload + save_pretrained): {row['peft']:.2f}s, peak RSS "
            f"{row['peft_rss'] / 2**30:.2f} GiB, export/B {row['wall'] / row['peft']:.2f}" if refs else "")
    print(f"[{layers} layers, {row['gb']:.2f} GB] export {row['wall']:.2f}s (without torch's fixed costs "
          f"{row['no_import']:.2f}s), peak RSS {row['rss'] / 2**30:.2f} GiB; reference A (cp + sync) {row['cp']:.2f}s, "
          f"export/A {row['wall'] / row['cp']:.2f}\n{peft}".rstrip())
    shutil.rmtree(root)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-reference-b", dest="reference_b", action="store_false")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    print(f"bench_moe_merge: Mixtral-like, hidden {HIDDEN}, {EXPERTS} experts of {INTER}, LoRA r={RANK} (PEFT "
          f"all-linear), runs={args.runs} (medians), {os.cpu_count()} cores, load {_load()}")
    with tempfile.TemporaryDirectory(prefix="bench-moe-", dir=args.workdir) as tmp:
        layers = sorted(args.layers)
        rows = [bench_layers(n, args.reference_b and n == layers[-1], args, Path(tmp)) for n in layers]
    first, last = rows[0], rows[-1]
    print(f"peak RSS of export, {last['layers']} vs {first['layers']} layers: {last['rss'] / first['rss']:.2f}x "
          f"for {last['gb'] / first['gb']:.2f}x the bytes")
    if len(rows) > 1:
        added = last["gb"] - first["gb"]
        print(f"the {last['layers'] - first['layers']} added layers ({added:.2f} GB): export +{last['wall'] - first['wall']:.2f}s "
              f"({added / max(last['wall'] - first['wall'], 1e-9):.2f} GB/s), cp + sync +{last['cp'] - first['cp']:.2f}s")
    print(f"load at the end {_load()}")


if __name__ == "__main__":
    main()
