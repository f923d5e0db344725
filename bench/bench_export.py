"""Export benchmark: streaming LoRA merge + shard write against references measured in
the same run (medians of --runs).

A Llama-architecture base of ~1B / ~2B parameters (bf16, 1 GB shards) is generated
straight into safetensors shards (never as a transformers model), with a rank-16 LoRA on
every projection written in PEFT's format. Printed:

* export (merge + write + sync) wall time, GB/s, and peak RSS of the exporting process
  (a child process, its own ``ru_maxrss`` from ``os.wait4``);
* reference A: ``cp -r`` of the base folder + ``sync`` (the physical floor);
* reference B: transformers + PEFT ``merge_and_unload()`` + ``save_pretrained`` (bf16);
* upload of the export to fake-gcs-server: parallel (8 streams) next to one stream.

Usage: python bench/bench_export.py [--size 1B|2B] [--quick] [--runs 3] [--no-reference-b] [--no-upload]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # hidden, intermediate, layers, vocab
    "quick": (1024, 2816, 12, 32000),
    "1B": (2048, 5632, 16, 32000),
    "2B": (2048, 5632, 36, 32000),
}
PROJ = {"q_proj": "attn", "k_proj": "attn", "v_proj": "attn", "o_proj": "attn",
        "gate_proj": "up", "up_proj": "up", "down_proj": "down"}
RANK = 16


def _shapes(hidden: int, inter: int, layers: int, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}"
        out += [(f"{p}.input_layernorm.weight", (hidden,)), (f"{p}.post_attention_layernorm.weight", (hidden,))]
        out += [(f"{p}.self_attn.{n}.weight", (hidden, hidden)) for n in ("q_proj", "k_proj", "v_proj", "o_proj")]
        out += [(f"{p}.mlp.gate_proj.weight", (inter, hidden)), (f"{p}.mlp.up_proj.weight", (inter, hidden)),
                (f"{p}.mlp.down_proj.weight", (hidden, inter))]
    return out + [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]


def generate(root: Path, size: str) -> tuple[Path, Path, int]:
    """Writes base (1 GB shards) and adapter; returns their folders and the base bytes."""
    import torch
    from safetensors.torch import save_file

    from tune2serve.pipelines.demo.tiny_models import train_tokenizer

    hidden, inter, layers, vocab = SIZES[size]
    base, adapter = root / "base", root / "adapter"
    base.mkdir(parents=True)
    adapter.mkdir()
    torch.manual_seed(0)
    shapes = _shapes(hidden, inter, layers, vocab)
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    used = 0
    for name, shape in shapes:
        n = 2 * int(torch.tensor(shape).prod())
        if groups[-1] and used + n > 10**9:
            groups.append([])
            used = 0
        groups[-1].append((name, shape))
        used += n
    weight_map = {}
    for i, group in enumerate(groups):
        shard = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: (torch.randn(s) * 0.02).to(torch.bfloat16) for n, s in group}, str(base / shard), metadata={"format": "pt"})
        weight_map.update({n: shard for n, _ in group})
    (base / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (base / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "intermediate_size": inter,
        "num_hidden_layers": layers, "num_attention_heads": hidden // 128, "num_key_value_heads": hidden // 128,
        "vocab_size": vocab, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
        "dtype": "bfloat16", "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2}))
    train_tokenizer(base)
    lora = {}
    for i in range(layers):
        for proj, kind in PROJ.items():
            module = f"model.layers.{i}.{'self_attn' if kind == 'attn' else 'mlp'}.{proj}"
            fan_in, fan_out = {"attn": (hidden, hidden), "up": (hidden, inter), "down": (inter, hidden)}[kind]
            lora[f"base_model.model.{module}.lora_A.weight"] = torch.randn(RANK, fan_in) * 0.01
            lora[f"base_model.model.{module}.lora_B.weight"] = torch.randn(fan_out, RANK) * 0.01
    save_file(lora, str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": RANK, "lora_alpha": 32, "target_modules": list(PROJ), "base_model_name_or_path": str(base),
        "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "modules_to_save": None}))
    return base, adapter, sum(p.stat().st_size for p in base.glob("*.safetensors"))


def _child(code: str) -> tuple[float, int]:
    """Runs python code in a child; (wall seconds incl. sync, peak RSS bytes of that child)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    subprocess.run(["sync"], check=True)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"child failed ({status}): {code[:200]}")
    return wall, usage.ru_maxrss * 1024


def run_export(adapter: Path, out: Path) -> tuple[float, int]:
    code = (f"from tune2serve.components.export.export import export_checkpoint\n"
            f"export_checkpoint({str(adapter)!r}, {str(out)!r}, max_shard_size='1GB')")
    return _child(code)


def run_cp(base: Path, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["cp", "-r", str(base), str(out)], check=True)
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - start


def run_reference_b(base: Path, adapter: Path, out: Path) -> tuple[float, int]:
    code = (f"import torch\nfrom transformers import AutoModelForCausalLM\nfrom peft import PeftModel\n"
            f"m = AutoModelForCausalLM.from_pretrained({str(base)!r}, dtype=torch.bfloat16)\n"
            f"m = PeftModel.from_pretrained(m, {str(adapter)!r}).merge_and_unload()\n"
            f"m.save_pretrained({str(out)!r}, max_shard_size='1GB')")
    return _child(code)


def upload(files: list[Path], workers: int, bucket: str) -> float:
    from concurrent.futures import ThreadPoolExecutor

    from tune2serve.components.checkpoint.storage import GcsFolder

    folder = GcsFolder(f"gs://{bucket}/w{workers}")
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda p: folder.upload_file(p.name, p), files))
    return time.perf_counter() - start


def bench_upload(export_dir: Path, scratch: Path) -> dict[str, float]:
    from tune2serve.components.checkpoint.storage import storage_client
    from tune2serve.pipelines.local import gcs
    from tune2serve.pipelines.local.ports import free_port

    port = free_port()
    root = scratch / "fake-gcs"
    root.mkdir()
    proc = subprocess.Popen(gcs.command(root, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
        gcs.wait_ready(os.environ["STORAGE_EMULATOR_HOST"], process=proc)
        storage_client().create_bucket("bench")
        files = sorted(p for p in export_dir.iterdir() if p.is_file())
        total = sum(p.stat().st_size for p in files)
        single = upload(files, 1, "bench")
        shutil.rmtree(root / "bench" / "w1", ignore_errors=True)
        parallel = upload(files, 8, "bench")
        return {"bytes": total, "single_s": single, "parallel_s": parallel}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.environ.pop("STORAGE_EMULATOR_HOST", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["1B", "2B"], default="2B")
    parser.add_argument("--quick", action="store_true", help="a ~200M model, for a smoke run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-reference-b", action="store_true")
    parser.add_argument("--no-upload", action="store_true")
    parser.add_argument("--workdir", default=None, help="where to generate (default: a temp dir)")
    args = parser.parse_args()
    size = "quick" if args.quick else args.size
    with tempfile.TemporaryDirectory(prefix="bench-export-", dir=args.workdir) as tmp:
        scratch = Path(tmp)
        t0 = time.perf_counter()
        base, adapter, nbytes = generate(scratch, size)
        print(f"generated {size}: {nbytes / 1e9:.2f} GB of bf16 base weights in {time.perf_counter() - t0:.0f}s")
        exports, rss, cps, refb, refb_rss = [], [], [], [], []
        for _ in range(args.runs):
            out = scratch / "export"
            wall, peak = run_export(adapter, out)
            exports.append(wall)
            rss.append(peak)
            if _ == args.runs - 1 and not args.no_upload:
                up = bench_upload(out, scratch)
            shutil.rmtree(out)
            cps.append(run_cp(base, scratch / "copy"))
            shutil.rmtree(scratch / "copy")
            if not args.no_reference_b:
                wall_b, peak_b = run_reference_b(base, adapter, scratch / "peft")
                refb.append(wall_b)
                refb_rss.append(peak_b)
                shutil.rmtree(scratch / "peft")
        med = statistics.median
        gb = nbytes / 1e9
        print(f"export (merge+write+sync): {med(exports):.2f}s  {gb / med(exports):.2f} GB/s  "
              f"peak RSS {max(rss) / 2**30:.2f} GiB (largest output shard: 1 GB)")
        print(f"reference A cp -r + sync:  {med(cps):.2f}s  {gb / med(cps):.2f} GB/s  ->  export/cp = {med(exports) / med(cps):.2f}x")
        if refb:
            print(f"reference B PEFT merge_and_unload + save_pretrained: {med(refb):.2f}s  peak RSS "
                  f"{max(refb_rss) / 2**30:.2f} GiB  ->  export is {med(refb) / med(exports):.2f}x faster")
        if not args.no_upload:
            print(f"upload to fake-gcs-server ({up['bytes'] / 1e9:.2f} GB): one stream {up['bytes'] / 1e9 / up['single_s']:.2f} GB/s, "
                  f"8 parallel {up['bytes'] / 1e9 / up['parallel_s']:.2f} GB/s ({up['single_s'] / up['parallel_s']:.2f}x)")
        print(f"runs={args.runs} (medians); machine: {os.cpu_count()} cores, shared")


if __name__ == "__main__":
    main()
