"""Benchmark: validate on a checkpoint with Llama-3.1-70B's exact tensor layout.

The 30 shards (~4.7 GB each, 141 GB in all) are SPARSE files: a real safetensors header
followed by a hole, so the files have their true sizes and validate checks header +
data = file size for real, while the disk holds only the headers. Printed, medians of
3 runs: validate's wall time and bytes read (total and per shard) on local disk and on
fake-gcs-server (the sparse files placed in its filesystem backend's layout, so each
object has its true size), against transformers building the same model on the meta
device from the same folder (the cheapest thing transformers can do with it).

Run: python bench/bench_validate.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = 3
SHARDS = 30
CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8192, "intermediate_size": 28672,
    "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128,
    "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "hidden_act": "silu", "bos_token_id": 128000,
    "eos_token_id": 128001, "attention_bias": False, "mlp_bias": False,
}


def llama70b_tensors() -> list[tuple[str, list[int]]]:
    h, i, v, kv = 8192, 28672, 128256, 8 * 128
    out = [("model.embed_tokens.weight", [v, h])]
    for n in range(80):
        p = f"model.layers.{n}."
        out += [(p + "input_layernorm.weight", [h]), (p + "self_attn.q_proj.weight", [h, h]),
                (p + "self_attn.k_proj.weight", [kv, h]), (p + "self_attn.v_proj.weight", [kv, h]),
                (p + "self_attn.o_proj.weight", [h, h]), (p + "post_attention_layernorm.weight", [h]),
                (p + "mlp.gate_proj.weight", [i, h]), (p + "mlp.up_proj.weight", [i, h]),
                (p + "mlp.down_proj.weight", [h, i])]
    return out + [("model.norm.weight", [h]), ("lm_head.weight", [v, h])]


def write_sparse(folder: Path, tensors: list[tuple[str, list[int]]], config: dict, shards: int,
                 slack: float = 1.0) -> int:
    """bf16 safetensors shards with real headers and a hole for the data, their index and
    config.json; returns the data bytes. A shard may run ``slack`` over its even share."""
    folder.mkdir(parents=True, exist_ok=True)
    nbytes = [2 * _numel(shape) for _, shape in tensors]
    target = sum(nbytes) / shards
    groups: list[list[int]] = [[]]
    size = 0
    for k, n in enumerate(nbytes):
        if groups[-1] and size + n > target * slack and len(groups) < shards:
            groups.append([])
            size = 0
        groups[-1].append(k)
        size += n
    weight_map, total = {}, 0
    for s, group in enumerate(groups):
        name = f"model-{s + 1:05d}-of-{len(groups):05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for k in group:
            tname, shape = tensors[k]
            header[tname] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + nbytes[k]]}
            weight_map[tname] = name
            offset += nbytes[k]
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with open(folder / name, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)) + raw)
            fh.truncate(8 + len(raw) + offset)  # the tensor data: a hole
        total += offset
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return total


def write_sparse_checkpoint(folder: Path) -> None:
    from tune2serve.demo.tiny_models import train_tokenizer

    write_sparse(folder, llama70b_tensors(), CONFIG, SHARDS, slack=1.02)
    train_tokenizer(folder)


def _header_len(path: Path) -> int:
    with open(path, "rb") as fh:
        return int(struct.unpack("<Q", fh.read(8))[0])


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def time_validate(uri: str) -> tuple[float, int, dict]:
    from tune2serve.components.validate import validate_checkpoint

    start = time.perf_counter()
    report = validate_checkpoint(uri)
    return time.perf_counter() - start, int(report.summary["bytes_read"]), report.to_dict()


def time_cli(uri: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tune2serve.cli.main", "validate", uri, "--json"],
                   capture_output=True, env=env, check=False)
    return time.perf_counter() - start


REFERENCE = """
import json, sys, time
t0 = time.perf_counter()
import torch
from transformers import AutoConfig, AutoModelForCausalLM
t1 = time.perf_counter()
config = AutoConfig.from_pretrained(sys.argv[1])
json.load(open(sys.argv[1] + "/model.safetensors.index.json"))
with torch.device("meta"):
    model = AutoModelForCausalLM.from_config(config)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "build_s": t2 - t1, "params": sum(p.numel() for p in model.parameters())}))
"""


def time_reference(folder: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", REFERENCE, str(folder)], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def place_in_fake_gcs(folder: Path, gcs_root: Path, bucket: str, prefix: str) -> str:
    """Small files go through the real client; the sparse shards are placed as files in
    fake-gcs-server's filesystem layout (``ROOT/BUCKET/NAME`` plus the ``user.metadata``
    xattr it reads), because uploading 141 GB is not possible."""
    from tune2serve.components.checkpoint.storage import storage_client

    client = storage_client()
    client.create_bucket(bucket)
    b = client.bucket(bucket)
    shards = sorted(folder.glob("*.safetensors"))
    for path in sorted(folder.iterdir()):
        if path.suffix != ".safetensors":
            b.blob(f"{prefix}/{path.name}").upload_from_filename(str(path))
    template = json.loads(os.getxattr(gcs_root / bucket / prefix / "config.json", "user.metadata"))
    for path in shards:
        target = gcs_root / bucket / prefix / path.name
        with open(path, "rb") as src:
            data = src.read(8 + _header_len(path))
        with open(target, "wb") as dst:
            dst.write(data)
            dst.truncate(path.stat().st_size)
        # Checksums stay the template's (validate reads with checksum=None): empty ones make
        # fake-gcs-server hash the whole 4.7 GB object on first access.
        meta = {**template, "ContentType": "application/octet-stream"}
        os.setxattr(target, "user.metadata", json.dumps(meta).encode())
    return f"gs://{bucket}/{prefix}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    from tune2serve.components import logs
    from tune2serve.localstack import gcs
    from tune2serve.localstack.ports import free_port

    logs.configure(level="WARNING")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-validate-"))
    folder = work / "llama-3.1-70b-layout"
    t = time.perf_counter()
    write_sparse_checkpoint(folder)
    apparent = sum(p.stat().st_size for p in folder.iterdir())
    on_disk = sum(p.stat().st_blocks * 512 for p in folder.iterdir())
    shards = len(list(folder.glob("*.safetensors")))
    print(f"checkpoint: Llama-3.1-70B layout, {shards} shards, {apparent / 1e9:.1f} GB apparent, "
          f"{on_disk / 1e6:.1f} MB on disk (sparse), built in {time.perf_counter() - t:.1f} s")

    local = [time_validate(str(folder)) for _ in range(RUNS)]
    local_s = statistics.median(r[0] for r in local)
    local_bytes = local[0][1]
    doc = local[0][2]
    print(f"validate report: ok={doc['ok']} params={doc['summary']['parameters']:,} "
          f"matched={doc['summary']['matched_model']} errors/warnings={doc['summary']['errors']}/"
          f"{doc['summary']['warnings']} codes={sorted({f['code'] for f in doc['findings']})}")
    cli_s = statistics.median(time_cli(str(folder), dict(os.environ)) for _ in range(RUNS))

    gcs_root = work / "fake-gcs"
    gcs_root.mkdir(exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(gcs.command(gcs_root, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        gcs.wait_ready(url, process=proc)
        os.environ["STORAGE_EMULATOR_HOST"] = url
        uri = place_in_fake_gcs(folder, gcs_root, "bench", "exports/llama70b")
        t = time.perf_counter()
        remote = [time_validate(uri) for _ in range(RUNS)]
        print(f"gcs: {RUNS} validate runs took {time.perf_counter() - t:.1f} s in all")
        remote_s = statistics.median(r[0] for r in remote)
        remote_bytes = remote[0][1]
        same = [(f["code"], f["file"]) for f in remote[0][2]["findings"]] == [
            (f["code"], f["file"]) for f in doc["findings"]]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.environ.pop("STORAGE_EMULATOR_HOST", None)

    refs = [time_reference(folder) for _ in range(RUNS)]
    ref_build = statistics.median(r["build_s"] for r in refs)
    ref_total = statistics.median(r["build_s"] + r["import_s"] for r in refs)
    header_bytes = sum(8 + _header_len(p) for p in folder.glob("*.safetensors"))

    print(f"\nmedians of {RUNS} runs (2-core shared machine, noisy)")
    print(f"  validate, local, in process        {local_s:8.3f} s   read {local_bytes / 2**20:6.2f} MiB "
          f"({local_bytes / shards / 1024:6.1f} KiB per shard; headers are {header_bytes / shards / 1024:.1f} KiB)")
    print(f"  validate, local, CLI subprocess    {cli_s:8.3f} s   (interpreter start + imports included)")
    print(f"  validate, fake-gcs-server          {remote_s:8.3f} s   read {remote_bytes / 2**20:6.2f} MiB "
          f"({remote_bytes / shards / 1024:6.1f} KiB per shard); same findings as local: {same}")
    print(f"  transformers meta-device build     {ref_build:8.3f} s   (+ torch/transformers import: "
          f"{ref_total:.3f} s in all)")
    print(f"\nratios: validate local / transformers meta build = {local_s / ref_build:.3f}; "
          f"CLI validate / (import + meta build) = {cli_s / ref_total:.3f}; gcs / local = {remote_s / local_s:.2f}")
    print(f"targets: < 2 s -> {'met' if max(local_s, remote_s) < 2 else 'MISSED'}; < 1 MiB per shard -> "
          f"{'met' if max(local_bytes, remote_bytes) / shards < 2**20 else 'MISSED'}")
    print(f"(workdir {work}; sparse files, safe to delete)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
