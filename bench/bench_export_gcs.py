"""Export benchmark at scale: gs:// → gs:// streaming, and the fan-out plan of the largest
supported layouts.

(a) ``--gcs`` (default on): a Llama-architecture base of ``--size`` (2B: 3.96 GB bf16,
3B: 3.35 GB — issue 26's fixture —, 1 GB shards) with a rank-16 LoRA on every projection
(``bench_export.generate``) is put on a fake-gcs-server; then, medians of ``--runs``, in
one run each (paired: the ratio is taken run by run, at the same load):

* the export gs:// → gs:// in a child process (ranged reads of the base, output shards
  of ``--max-shard-size`` uploaded as they finish): wall time, peak local disk (the
  sampled size of the child's scratch folder, every 50 ms) and peak RSS (its ``VmHWM``);
* the reference: a plain copy of the same base objects through the same client and
  server, file after file (download to a local file, upload it, delete it: gsutil's
  way through a machine), with its own peak scratch disk;
* the export's commit apart: it publishes each staged shard under its name with a
  server-side copy, which fake-gcs-server makes by copying the bytes while Cloud Storage
  makes it in one request within a location and storage class (objects.rewrite's
  ``maxBytesRewrittenPerCall`` "only applies to requests where the source and destination
  span locations and/or storage classes"), so the ratio is printed with and without it;
* for both, CPU seconds: the client's (the child process, all threads) and the
  server's (fake-gcs-server shares the 2 cores: its CPU is most of the wall time, the
  same for both sides), so the comparison does not depend on the machine's load.

(b) ``--plan`` (default on): the headers-only plan of Qwen3-Coder-480B-A35B (bf16,
~960 GB, 241 shards) and Llama-3.1-70B (141 GB, 30 shards) as sparse files (a real
header, then a hole, as bench_validate does): plan wall time, groups for 1, 8 and 32
workers, the largest group's bytes, and the projected export wall time at a STATED
per-worker throughput (``--worker-mbps``, default 400 MB/s: one GCS read stream + merge +
one resumable upload per worker; the plan's and commit's fixed costs excluded).

``--layers 8 16 32`` (with ``--size 1B``'s widths): one model per layer count, one after
another on the same server, then the flatness table: peak RSS and peak local disk per
size and the least-squares slope of peak RSS in MiB per added GB (medians of ``--runs``).

Usage: python bench/bench_export_gcs.py [--size 2B] [--layers N ...] [--max-shard-size 1GB]
       [--runs 3] [--no-copy] [--no-merge] [--no-gcs] [--no-plan] [--worker-mbps 400] [--workdir DIR]
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
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_export import SIZES, _PEAK_RSS, _children_cpu, _cpu_seconds, _load, fake_gcs, generate  # noqa: E402
from bench_validate import write_sparse  # noqa: E402  (the same sparse layouts)

_CHILD = """
import json, sys, tempfile, time
tempfile.tempdir = sys.argv[3]
from tune2serve.components.export.export import COMMIT_SPAN, export_checkpoint
from tune2serve.components.export.timing import Spans
spans = Spans()
t0 = time.perf_counter()
export_checkpoint(sys.argv[1], sys.argv[2], base_model=sys.argv[4] or None, max_shard_size=sys.argv[5], spans=spans)
json.dump({"export_s": time.perf_counter() - t0, "rss": peak_rss(), "commit_s": spans.seconds.get(COMMIT_SPAN, 0.0)},
          sys.stdout)
"""

_COPY_CHILD = """
import json, os, sys, tempfile, time
from tune2serve.components.checkpoint.storage import storage_client
client = storage_client()
bucket = client.bucket(sys.argv[1])
t0 = time.perf_counter()
for blob in client.list_blobs(sys.argv[1], prefix=sys.argv[2] + "/"):
    local = os.path.join(sys.argv[4], "obj")
    blob.download_to_filename(local)
    bucket.blob(sys.argv[3] + "/" + blob.name[len(sys.argv[2]) + 1:]).upload_from_filename(local)
    os.unlink(local)
json.dump({"copy_s": time.perf_counter() - t0, "rss": peak_rss()}, sys.stdout)
"""


class DiskSampler:
    """The peak total size of the files under ``root``, sampled every ``every`` s."""

    def __init__(self, root: Path, every: float = 0.05) -> None:
        self.root, self.every, self.peak = root, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for dirpath, _, files in os.walk(self.root):
                for f in files:
                    try:
                        total += os.stat(os.path.join(dirpath, f)).st_blocks * 512
                    except OSError:
                        pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _child(code: str, args: list[str], scratch: Path, server: int | None = None) -> tuple[float, dict, int]:
    """Runs ``code``; its wall time, report (with ``cpu``: the child's CPU seconds and
    ``server_cpu``: the server's meanwhile) and the peak size of ``scratch``."""
    scratch.mkdir(parents=True, exist_ok=True)
    server0 = _cpu_seconds(server) if server else 0.0
    cpu0, start = _children_cpu(), time.perf_counter()
    with DiskSampler(scratch) as disk:
        proc = subprocess.run([sys.executable, "-c", _PEAK_RSS + code, *args], capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, _children_cpu() - cpu0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    report = {**json.loads(proc.stdout), "cpu": cpu, "server_cpu": (_cpu_seconds(server) - server0) if server else 0.0}
    return wall, report, disk.peak


def bench_gcs(size: str, layers: list[int | None], runs: int, shard: str, work: Path, copy: bool = True,
              merge: bool = True) -> None:
    """Each model (``size``'s widths, each layer count) on the server in turn: export and
    copy (unless not ``copy``: nan) ``runs`` times; with several models, the flatness
    table and the RSS slope. Not ``merge``: the base itself is exported (no adapter), to
    tell the adapter's share of the memory from the streaming's."""
    from tests.conftest import upload_folder
    from tune2serve.components.checkpoint.storage import storage_client

    work.mkdir(parents=True, exist_ok=True)
    root = work / "fake-gcs"
    meds = []
    with fake_gcs(root) as server:
        storage_client().create_bucket("bench")
        for n in layers:
            label = f"{size}, {n} layers" if n else size
            base, adapter, nbytes = generate(work / "model", size, n)
            adapter_bytes = sum(p.stat().st_size for p in adapter.iterdir())  # held in memory, float32: grows with layers
            base_uri = upload_folder(base, "bench", "base")
            adapter_uri = upload_folder(adapter, "bench", "runs/1")
            shutil.rmtree(work / "model")  # from here on the model exists only on the server
            print(f"model: {label}, {nbytes / 1e9:.2f} GB bf16 in 1 GB shards on fake-gcs-server, output shards "
                  f"{shard}; load {_load()}", flush=True)
            rows = []
            for i in range(runs):
                source, base_model = (adapter_uri, base_uri) if merge else (base_uri, "")
                load = float(_load().split()[0])
                wall, rep, disk = _child(_CHILD, [source, f"gs://bench/out-{i}", str(work / f"scratch-{i}"),
                                                  base_model, shard], work / f"scratch-{i}", server.pid)
                cwall, crep, cdisk = (_child(_COPY_CHILD, ["bench", "base", f"copy-{i}", str(work / f"copy-scratch-{i}")],
                                             work / f"copy-scratch-{i}", server.pid) if copy
                                      else (float("nan"), {"rss": 0, "cpu": float("nan"), "server_cpu": float("nan")}, 0))
                rows.append({"export": wall, "copy": cwall, "ratio": wall / cwall, "commit": rep["commit_s"],
                             "ratio_no_copy": (wall - rep["commit_s"]) / cwall, "disk": disk, "copy_disk": cdisk,
                             "rss": rep["rss"], "copy_rss": crep["rss"], "cpu": rep["cpu"], "copy_cpu": crep["cpu"],
                             "server_cpu": rep["server_cpu"], "copy_server_cpu": crep["server_cpu"],
                             "cpu_ratio": (rep["cpu"] + rep["server_cpu"]) / (crep["cpu"] + crep["server_cpu"]),
                             "load": load})
                for prefix in (f"out-{i}", f"copy-{i}"):
                    shutil.rmtree(root / "bench" / prefix, ignore_errors=True)
                print(f"  run {i + 1}: export {wall:.1f} s (commit {rep['commit_s']:.1f} s), copy {cwall:.1f} s, ratio "
                      f"{wall / cwall:.2f} ({(wall - rep['commit_s']) / cwall:.2f} without the commit); CPU client "
                      f"{rep['cpu']:.1f} s vs {crep['cpu']:.1f} s, server {rep['server_cpu']:.1f} s vs "
                      f"{crep['server_cpu']:.1f} s; peak disk {disk / 1e9:.2f} GB (copy {cdisk / 1e9:.2f} GB), peak RSS "
                      f"{rep['rss'] / 2**20:.0f} MiB; load {load:.2f}", flush=True)
            med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            print(f"gs:// → gs:// export, median of {runs}: {med['export']:.1f} s vs plain copy {med['copy']:.1f} s "
                  f"(median of paired ratios {med['ratio']:.2f}; target <= 1.10), {nbytes / 1e9 / med['export']:.2f} GB/s; "
                  f"of it the commit {med['commit']:.1f} s — each staged shard copied to its name, a byte copy on "
                  f"fake-gcs-server, one metadata-only rewrite within a bucket on Cloud Storage — and without it "
                  f"{med['ratio_no_copy']:.2f}; "
                  f"CPU (client + server) {med['cpu'] + med['server_cpu']:.1f} s vs {med['copy_cpu'] + med['copy_server_cpu']:.1f}"
                  f" s (ratio {med['cpu_ratio']:.2f}; client {med['cpu']:.1f} vs {med['copy_cpu']:.1f} s = "
                  f"{med['cpu'] / (nbytes / 1e9):.2f} vs {med['copy_cpu'] / (nbytes / 1e9):.2f} CPU s/GB); peak local disk "
                  f"{med['disk'] / 1e9:.2f} GB ({med['disk'] / nbytes:.2f}× the model; copy {med['copy_disk'] / 1e9:.2f} GB); "
                  f"peak RSS {med['rss'] / 2**20:.0f} MiB (copy {med['copy_rss'] / 2**20:.0f} MiB); load median "
                  f"{med['load']:.2f}, now {_load()}", flush=True)
            meds.append((label, nbytes, {**med, "adapter": adapter_bytes if merge else 0}))
            for prefix in ("base", "runs"):
                shutil.rmtree(root / "bench" / prefix, ignore_errors=True)
    if len(meds) > 1:
        print(flatness(meds, runs, shard))


def flatness(meds: list[tuple[str, int, dict]], runs: int, shard: str) -> str:
    """Peak RSS and disk per model size, and the least-squares slope of peak RSS over the
    model's bytes (MiB per added GB): flat is a slope near 0, whatever the size."""
    xs = [n / 1e9 for _, n, _ in meds]
    ys = [m["rss"] / 2**20 for _, _, m in meds]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    lines = [f"flatness (medians of {runs}, output shards {shard}):"]
    lines += [f"  {label:>18s}: {n / 1e9:5.2f} GB  peak RSS {m['rss'] / 2**20:5.0f} MiB  peak local disk "
              f"{m['disk'] / 1e9:.2f} GB  adapter {m['adapter'] / 2**20:.0f} MiB  export {m['export']:.1f} s "
              f"(copy {m['copy']:.1f} s)" for label, n, m in meds]
    lines.append(f"  peak RSS slope {slope:+.1f} MiB per added GB ({min(ys):.0f}..{max(ys):.0f} MiB over "
                 f"{xs[0]:.2f}..{xs[-1]:.2f} GB, {xs[-1] / xs[0]:.1f}x the bytes)")
    return "\n".join(lines)


# -- (b) the plan of the largest layouts -------------------------------------------------
QWEN3_CODER_480B = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 6144,
                    "intermediate_size": 8192, "num_hidden_layers": 62, "num_attention_heads": 96,
                    "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936, "moe_intermediate_size": 2560,
                    "num_experts": 160, "num_experts_per_tok": 8, "decoder_sparse_step": 1, "mlp_only_layers": [],
                    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "rms_norm_eps": 1e-6}


def qwen3_coder_480b_tensors() -> list[tuple[str, list[int]]]:
    """Qwen3MoeForCausalLM's state dict names and shapes for Qwen3-Coder-480B-A35B."""
    c = QWEN3_CODER_480B
    h, heads, kv, hd, e, mi, v = (c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"],
                                  c["num_experts"], c["moe_intermediate_size"], c["vocab_size"])
    out = [("model.embed_tokens.weight", [v, h])]
    for n in range(c["num_hidden_layers"]):
        p = f"model.layers.{n}."
        out += [(p + "input_layernorm.weight", [h]), (p + "self_attn.q_proj.weight", [heads * hd, h]),
                (p + "self_attn.k_proj.weight", [kv * hd, h]), (p + "self_attn.v_proj.weight", [kv * hd, h]),
                (p + "self_attn.o_proj.weight", [h, heads * hd]), (p + "self_attn.q_norm.weight", [hd]),
                (p + "self_attn.k_norm.weight", [hd]), (p + "post_attention_layernorm.weight", [h]),
                (p + "mlp.gate.weight", [e, h])]
        for x in range(e):
            q = f"{p}mlp.experts.{x}."
            out += [(q + "gate_proj.weight", [mi, h]), (q + "up_proj.weight", [mi, h]), (q + "down_proj.weight", [h, mi])]
    return out + [("model.norm.weight", [h]), ("lm_head.weight", [v, h])]


def bench_plan(work: Path, mbps: float, runs: int) -> None:
    from bench_validate import CONFIG as LLAMA_70B
    from bench_validate import llama70b_tensors

    from tune2serve.components.export.fanout.fanout import plan_export

    print(f"headers-only plan (sparse files), projected wall time at {mbps:.0f} MB/s per worker "
          "(data only; each worker's start-up and the commit excluded)")
    for label, tensors, config, shards in (("Qwen3-Coder-480B-A35B", qwen3_coder_480b_tensors(), QWEN3_CODER_480B, 241),
                                           ("Llama-3.1-70B", llama70b_tensors(), LLAMA_70B, 30)):
        src = work / label
        total = write_sparse(src, tensors, config, shards)
        for workers in (1, 8, 32):
            times, groups = [], []
            for i in range(runs):
                start = time.perf_counter()
                groups, _ = plan_export(str(src), str(work / f"out-{label}-{workers}-{i}"), workers=workers)
                times.append(time.perf_counter() - start)
            largest = max(g.bytes for g in groups)
            print(f"  {label}: {total / 1e9:.0f} GB, {len(tensors)} tensors, {shards} input shards; workers {workers:2d}: "
                  f"{len(groups)} groups of {min(len(g.shards) for g in groups)}-{max(len(g.shards) for g in groups)} "
                  f"shards, largest {largest / 1e9:.1f} GB; plan {statistics.median(times):.2f} s (median of {runs}); "
                  f"projected {largest / (mbps * 1e6) / 60:.1f} min")
        shutil.rmtree(src)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=[s for s in SIZES if s != "quick"], default="2B")
    parser.add_argument("--layers", type=int, nargs="+", default=None,
                        help="models of --size's widths with these layer counts, one after another (flatness)")
    parser.add_argument("--max-shard-size", default="1GB", help="the export's output shards")
    parser.add_argument("--no-copy", action="store_true", help="skip the plain-copy reference (RSS and disk only)")
    parser.add_argument("--no-merge", action="store_true", help="export the base itself, without the adapter")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-gcs", action="store_true")
    parser.add_argument("--no-plan", action="store_true")
    parser.add_argument("--worker-mbps", type=float, default=400.0)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory(prefix="bench-export-gcs-", dir=args.workdir) as tmp:
        work = Path(tmp)
        if not args.no_plan:
            bench_plan(work / "plan", args.worker_mbps, args.runs)
        if not args.no_gcs:
            bench_gcs(args.size, args.layers or [None], args.runs, args.max_shard_size, work / "gcs", not args.no_copy,
                      not args.no_merge)


if __name__ == "__main__":
    main()
