"""Export benchmark: streaming LoRA merge + shard write against references measured in
the same run (medians of --runs).

For each size (default 1B then 2B, to show peak RSS stays flat as the model grows) a
Llama-architecture base (bf16, 1 GB shards) is generated straight into safetensors
shards, with a rank-16 LoRA on every projection in PEFT's format. Printed:

* export (merge + write + fsync) in a child process: wall time from spawn to exit plus a
  ``sync`` (as reference A), the same without torch's fixed costs (what the export
  stood still waiting for its background ``import torch``, ~1.8 s here, and the exit),
  GB/s, and the child's peak RSS (its ``VmHWM``);
* reference A: ``cp -r`` of the base folder + ``sync`` (the physical floor);
* reference B: transformers + PEFT ``merge_and_unload()`` + ``save_pretrained`` (bf16);
* both page-cache states: ``warm`` (the base cached, as right after it was written) and
  ``cold`` (the base's pages evicted with posix_fadvise(DONTNEED) before the export and
  before the cp; reference B runs warm only);
* ``--profile``: where the export's time goes (seconds per stage, wall and CPU, summed
  over its threads: read, merge convert/GEMM/cast, hash, write, fsync, waits);
* upload of one export to fake-gcs-server (smallest size only): one stream, file after
  file, next to google-cloud-storage's transfer_manager with 8 threads, and the server's
  own CPU seconds per GB (fake-gcs-server, not the client, is what limits it).

The machine's load average is printed at the start and the end: on a shared machine,
compare ratios, not seconds.

``--compare-env TUNE2SERVE_EXPORT_WRITERS=1`` runs this checkout a second time with that
setting, paired in the same loop (shards written one at a time vs side by side).

Usage: python bench/bench_export.py [--sizes 1B 2B] [--quick] [--runs 3] [--profile]
       [--cache warm cold] [--copy-only] [--compare-env VAR=VALUE] [--no-reference-b] [--no-upload] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any
from pathlib import Path

SIZES = {  # hidden, intermediate, layers, vocab
    "quick": (1024, 2816, 12, 32000),
    "1B": (2048, 5632, 16, 32000),
    "2B": (2048, 5632, 36, 32000),
    "3B": (2048, 5632, 30, 32000),  # issue 26's fixture: 3.35 GB of bf16 in 4 shards of 1 GB
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


def generate(root: Path, size: str, layers: int | None = None) -> tuple[Path, Path, int]:
    """Writes base (1 GB shards) and adapter; returns their folders and the base bytes.
    ``layers`` overrides the size's layer count (the same widths, more or fewer layers)."""
    import torch
    from safetensors.torch import save_file

    from tune2serve.demo.tiny_models import train_tokenizer

    hidden, inter, size_layers, vocab = SIZES[size]
    layers = layers or size_layers
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


_CHILD = """
import json, resource, sys, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t0 = time.perf_counter()
if sys.argv[3] == "torch":  # a merge imports it anyway: timed apart, as a fixed cost
    import torch
t1 = time.perf_counter()
from tune2serve.components.export.export import export_checkpoint
from tune2serve.components.export.timing import Spans
spans = Spans()
c1 = cpu()
export_checkpoint(sys.argv[1], sys.argv[2], max_shard_size="1GB", spans=spans)
t2 = time.perf_counter()
json.dump({"torch_import_s": t1 - t0, "export_s": t2 - t1, "export_cpu_s": cpu() - c1, "spans": spans.to_json(),
           "rss": peak_rss(), "torch_loaded": "torch" in sys.modules, "ended_at": time.time()}, sys.stdout)
sys.stdout.write("\\n")
try:  # end as the tune2serve command ends (no interpreter teardown), where that exists
    from tune2serve.cli.main import exit_process
except ImportError:
    sys.stdout.flush()
else:
    exit_process(0)
"""
# VmHWM, not ru_maxrss: a child's ru_maxrss keeps the high-water mark of the parent it
# was forked from (this benchmark, holding the generated model), across exec.
_PEAK_RSS = """
def peak_rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
"""


def _wait(proc: subprocess.Popen, what: str) -> None:
    """Waits for the child, then ``sync``s (as reference A does)."""
    if proc.wait() != 0:
        raise SystemExit(f"{what} failed with exit code {proc.returncode}")
    subprocess.run(["sync"], check=True)


def evict(folder: Path) -> None:
    """Drops a folder's files from the page cache (clean pages only: sync first)."""
    subprocess.run(["sync"], check=True)
    for p in folder.iterdir():
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _children_cpu() -> float:
    """CPU seconds (user + system) of every child reaped so far: the difference around
    one child is its CPU time, whatever the machine's load did to its wall time."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# where the export stood still waiting for the background ``import torch`` (stream.py)
TORCH_WAITS = ("torch import (what the plan waited for)", "torch import (what the merge waited for)")


def run_export(source: Path, out: Path, python: str = sys.executable, torch_first: bool = True,
               env: dict[str, str] | None = None) -> dict:
    """One export of ``source`` in a child ``python`` (another checkout's venv to compare
    versions); ``torch_first``: import torch before the export, timed apart (a merge
    needs it), else the export imports what it needs and says whether torch was among it."""
    cpu0, start = _children_cpu(), time.perf_counter()
    proc = subprocess.Popen([python, "-c", _PEAK_RSS + _CHILD, str(source), str(out), "torch" if torch_first else "-"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    report = json.loads(proc.stdout.readline() or b"{}")
    proc.wait()
    exit_s = time.time() - report["ended_at"]  # interpreter teardown with torch loaded: ~0.5 s
    _wait(proc, "export")
    wall = time.perf_counter() - start
    waited = sum(report["spans"].get(k, {}).get("wall", 0.0) for k in TORCH_WAITS)
    return {"wall": wall, "wall_no_import": wall - report["torch_import_s"] - waited - exit_s, "exit_s": exit_s,
            "torch_wait_s": waited,
            "cpu_s": _children_cpu() - cpu0, "load": _load1(), **report}


def run_cp(base: Path, out: Path) -> dict:
    cpu0, start = _children_cpu(), time.perf_counter()
    subprocess.run(["cp", "-r", str(base), str(out)], check=True)
    subprocess.run(["sync"], check=True)
    return {"wall": time.perf_counter() - start, "cpu_s": _children_cpu() - cpu0}


def run_reference_b(base: Path, adapter: Path, out: Path) -> tuple[float, int]:
    code = (f"import torch\nfrom transformers import AutoModelForCausalLM\nfrom peft import PeftModel\n"
            f"m = AutoModelForCausalLM.from_pretrained({str(base)!r}, dtype=torch.bfloat16)\n"
            f"m = PeftModel.from_pretrained(m, {str(adapter)!r}).merge_and_unload()\n"
            f"m.save_pretrained({str(out)!r}, max_shard_size='1GB')\nprint(peak_rss())")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _PEAK_RSS + code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    rss = int(proc.stdout.read().split()[-1])
    _wait(proc, "reference B")
    return time.perf_counter() - start, rss


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def fake_gcs(root: Path) -> Iterator[subprocess.Popen]:
    """A fake-gcs-server on loopback with its data under ``root``, for the duration;
    ``STORAGE_EMULATOR_HOST`` points the storage client at it meanwhile."""
    from tune2serve.localstack import gcs
    from tune2serve.localstack.ports import free_port

    root.mkdir()
    port = free_port()
    proc = subprocess.Popen(gcs.command(root, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
        gcs.wait_ready(os.environ["STORAGE_EMULATOR_HOST"], process=proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        os.environ.pop("STORAGE_EMULATOR_HOST", None)


def bench_upload(export_dir: Path, scratch: Path) -> dict[str, float]:
    """One stream (file after file) vs transfer_manager (8 threads), same files, each
    into a fresh prefix; the server's CPU seconds are read from /proc."""
    from google.cloud.storage import transfer_manager

    from tune2serve.components.checkpoint.storage import storage_client

    root = scratch / "fake-gcs"
    with fake_gcs(root) as proc:
        bucket = storage_client().create_bucket("bench")
        names = sorted(p.name for p in export_dir.iterdir() if p.is_file())
        total = sum((export_dir / n).stat().st_size for n in names)
        cpu0, start = _cpu_seconds(proc.pid), time.perf_counter()
        for n in names:
            bucket.blob(f"single/{n}").upload_from_filename(str(export_dir / n))
        single, single_cpu = time.perf_counter() - start, _cpu_seconds(proc.pid) - cpu0
        shutil.rmtree(root / "bench" / "single", ignore_errors=True)
        cpu0, start = _cpu_seconds(proc.pid), time.perf_counter()
        transfer_manager.upload_many_from_filenames(bucket, names, source_directory=str(export_dir),
                                                    blob_name_prefix="parallel/", max_workers=8,
                                                    worker_type=transfer_manager.THREAD, raise_exception=True)
        parallel, parallel_cpu = time.perf_counter() - start, _cpu_seconds(proc.pid) - cpu0
        return {"bytes": total, "single_s": single, "parallel_s": parallel,
                "server_cpu_per_gb": (single_cpu + parallel_cpu) / (2 * total / 1e9)}


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _profile_lines(columns: dict[str, list[dict]]) -> list[str]:
    """Median seconds per stage over the runs, wall and CPU, one column per version."""
    med = statistics.median
    stages = sorted({k for runs in columns.values() for r in runs for k in r["spans"]})
    head = "".join(f"  {label:>22s}" for label in columns)
    lines = [f"    {'stage':34s}{head}", f"    {'':34s}" + "  " .join(f"{'wall s':>10s} {'cpu s':>11s}" for _ in columns)]

    def cell(runs: list[dict], get: Any) -> str:
        walls = [w for w in (get(r)[0] for r in runs) if w is not None]
        cpus = [c for c in (get(r)[1] for r in runs) if c is not None]
        if not walls:
            return f"  {'-':>10s} {'-':>11s}"
        return f"  {med(walls):10.2f} {(f'{med(cpus):11.2f}' if cpus else '-'):>11s}"

    for k in stages:
        lines.append(f"    {k:34s}" + "".join(cell(runs, lambda r, k=k: (r["spans"].get(k, {}).get("wall"),
                                                                             r["spans"].get(k, {}).get("cpu")))
                                               for runs in columns.values()))
    fixed = [("torch import (fixed)", "torch_import_s", None), ("exit (fixed)", "exit_s", None),
             ("export call", "export_s", "export_cpu_s"), ("child process, all", "wall", "cpu_s")]
    for title, wall_key, cpu_key in fixed:
        lines.append(f"    {title:34s}" + "".join(cell(runs, lambda r, w=wall_key, c=cpu_key: (r.get(w), r.get(c) if c else None))
                                                for runs in columns.values()))
    return lines


def _fixture(size: str, args: argparse.Namespace, scratch: Path) -> tuple[Path, Path, int]:
    """The generated base and adapter: kept in ``--fixture`` across invocations (made
    once), else made in the scratch folder."""
    root = (Path(args.fixture) if args.fixture else scratch) / size
    base, adapter = root / "base", root / "adapter"
    if args.fixture and (adapter / "adapter_config.json").is_file() and (base / "model.safetensors.index.json").is_file():
        return base, adapter, sum(p.stat().st_size for p in base.glob("*.safetensors"))
    shutil.rmtree(root, ignore_errors=True)
    return generate(root, size)


def bench_size(size: str, args: argparse.Namespace, scratch: Path, with_upload: bool) -> None:
    med = statistics.median
    t0 = time.perf_counter()
    base, adapter, nbytes = _fixture(size, args, scratch)
    gb = nbytes / 1e9
    print(f"\n== {size}: {nbytes} bytes ({gb:.2f} GB) of bf16 base weights in {len(list(base.glob('*.safetensors')))} "
          f"shards (ready in {time.perf_counter() - t0:.0f}s); load {_load()}", flush=True)
    pythons = {"this": (sys.executable, {}), **({args.compare_label: (args.compare_python, {})} if args.compare_python else {}),
               **({args.compare_label: (sys.executable, dict([args.compare_env.split("=", 1)]))} if args.compare_env else {})}
    modes = {"merge": (adapter, False), **({"copy": (base, False)} if args.copy_only else {})}
    exports: dict[tuple[str, str, str], list[dict]] = {}
    cps: dict[str, list[dict]] = {c: [] for c in args.cache}
    refb: list[tuple[float, int]] = []
    up = None
    for i in range(args.runs):
        for cache in args.cache:
            for label, (python, env) in pythons.items():  # versions alternate within a run: paired, same load
                for mode, (source, torch_first) in modes.items():
                    out = scratch / "export"
                    if cache == "cold":
                        evict(base)
                    exports.setdefault((label, mode, cache), []).append(run_export(source, out, python, torch_first, env))
                    if with_upload and i == args.runs - 1 and cache == args.cache[0] and label == "this" and mode == "merge":
                        up = bench_upload(out, scratch)
                    shutil.rmtree(out)
            if cache == "cold":
                evict(base)
            cps[cache].append(run_cp(base, scratch / "copy"))
            shutil.rmtree(scratch / "copy")
        if not args.no_reference_b:
            refb.append(run_reference_b(base, adapter, scratch / "peft"))
            shutil.rmtree(scratch / "peft")
    loads = [r["load"] for runs in exports.values() for r in runs]
    print(f"[{size}] load average (1 min) during the runs: median {med(loads):.2f}, {min(loads):.2f}..{max(loads):.2f}; "
          f"{os.cpu_count()} cores")
    for cache in args.cache:
        cp, cp_cpu = med(c["wall"] for c in cps[cache]), med(c["cpu_s"] for c in cps[cache])
        print(f"[{size} {cache}] reference A cp -r + sync: {cp:.2f}s  {gb / cp:.2f} GB/s  (cp's CPU {cp_cpu:.2f}s, "
              f"{cp_cpu / gb:.2f} CPU s/GB)")
        for (label, mode, c), runs in exports.items():
            if c != cache:
                continue
            wall, no_import = med(r["wall"] for r in runs), med(r["wall_no_import"] for r in runs)
            ratios = [r["wall"] / c_["wall"] for r, c_ in zip(runs, cps[cache])]
            cpu, call_cpu = med(r["cpu_s"] for r in runs), med(r["export_cpu_s"] for r in runs if "export_cpu_s" in r)
            rss = max(r["rss"] for r in runs)
            what = "merge+write+fsync" if mode == "merge" else "copy-only export, no adapter"
            print(f"[{size} {cache} {label} {mode}] export ({what}): {wall:.2f}s  {gb / wall:.2f} GB/s  ->  export/cp = "
                  f"{wall / cp:.2f}x (median of paired ratios {med(ratios):.2f}x; {no_import / cp:.2f}x without torch's "
                  f"fixed costs; target <= {'1.50' if cache == 'warm' else '1.00'}x)  peak RSS {rss / 2**30:.2f} GiB")
            print(f"[{size} {cache} {label} {mode}]   CPU: {cpu:.2f}s for the whole child ({cpu / cp_cpu:.2f}x cp's), "
                  f"{call_cpu:.2f}s in the export call = {call_cpu / gb:.2f} CPU s/GB = {gb / call_cpu:.2f} GB/s per core; "
                  f"torch imported: {'yes' if any(r.get('torch_loaded') for r in runs) else 'no'}; torch import "
                  f"{med(r['torch_import_s'] for r in runs):.2f}s before the export, "
                  f"{med(r.get('torch_wait_s', 0.0) for r in runs):.2f}s waited for in it, exit {med(r['exit_s'] for r in runs):.2f}s")
        if args.profile:
            for mode in modes:
                columns = {label: exports[(label, mode, cache)] for label in pythons}
                print(f"[{size} {cache} {mode}] export breakdown (medians; stages overlap across threads, cpu = the "
                      f"thread's own CPU seconds):")
                print("\n".join(_profile_lines(columns)))
    nic = 4.6  # GB/s: a 200 Gbps NIC writing to GCS, the fan-out worker's anchor
    for label in pythons:
        for mode in modes:
            runs = [r for cache in args.cache for r in exports[(label, mode, cache)]]
            per_gb = med(r["export_cpu_s"] for r in runs) / gb
            print(f"[{size} {label}] per-core throughput of the CPU path, {mode}: {per_gb:.2f} CPU s/GB = "
                  f"{1 / per_gb:.2f} GB/s per core -> {nic * per_gb:.1f} cores to keep up with {nic} GB/s "
                  f"(200 Gbps NIC; local disk write path, network client CPU not included)")
    if refb:
        wall_b = med(w for w, _ in refb)
        warm = med(r["wall"] for r in exports.get(("this", "merge", "warm"), exports[("this", "merge", args.cache[0])]))
        print(f"[{size}] reference B PEFT merge_and_unload + save_pretrained: {wall_b:.2f}s  peak RSS "
              f"{max(r for _, r in refb) / 2**30:.2f} GiB  ->  export is {wall_b / warm:.2f}x faster")
    if up:
        g = up["bytes"] / 1e9
        print(f"[{size}] upload to fake-gcs-server ({g:.2f} GB): one stream {g / up['single_s']:.3f} GB/s, "
              f"transfer_manager 8 threads {g / up['parallel_s']:.3f} GB/s ({up['single_s'] / up['parallel_s']:.2f}x); "
              f"the server spends {up['server_cpu_per_gb']:.1f} CPU s per GB")
    if not args.fixture:
        shutil.rmtree(scratch / size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=[s for s in SIZES if s != "quick"], default=["1B", "2B"])
    parser.add_argument("--quick", action="store_true", help="a ~200M model, for a smoke run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", nargs="+", choices=["warm", "cold"], default=["warm", "cold"])
    parser.add_argument("--profile", action="store_true", help="print where the export's time goes")
    parser.add_argument("--copy-only", action="store_true",
                        help="also export the base alone (no adapter: bytes moved, nothing merged)")
    parser.add_argument("--compare-python", default=None,
                        help="also run each export under this interpreter (another checkout's venv), paired")
    parser.add_argument("--compare-env", default=None, metavar="VAR=VALUE",
                        help="this checkout again with VAR=VALUE set, paired (e.g. TUNE2SERVE_EXPORT_WRITERS=1)")
    parser.add_argument("--compare-label", default="other")
    parser.add_argument("--fixture", default=None, help="keep the generated models here, reused by later runs")
    parser.add_argument("--no-reference-b", action="store_true")
    parser.add_argument("--no-upload", action="store_true")
    parser.add_argument("--workdir", default=None, help="where to generate (default: a temp dir)")
    args = parser.parse_args()
    sizes = ["quick"] if args.quick else args.sizes
    print(f"bench_export: runs={args.runs} (medians), machine: {os.cpu_count()} cores, shared; load {_load()}")
    with tempfile.TemporaryDirectory(prefix="bench-export-", dir=args.workdir) as tmp:
        for i, size in enumerate(sizes):
            bench_size(size, args, Path(tmp), with_upload=not args.no_upload and i == 0)
    print(f"\nload at the end {_load()}")


if __name__ == "__main__":
    main()
