"""Finite-weights check: what it costs an export, measured A/B in one run.

The same generated model (bench_export's: a Llama with a rank-16 LoRA on every
projection) is exported alternately with the check (as shipped) and without it, inside
the benchmark's own child process, warm cache, several runs each. Without it means: the
fused row merge (``lora_rows.c``, almost every merged byte) called with ``check=False``
(its compare and count per 8 values left out of the one pass) and the torch check of
whole tensors (``check_finite``) replaced by a no-op. It prints the medians and their
ratio, for the child's wall time and for the export call.

    python bench/bench_finite.py --size 1B --runs 5
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_export import _PEAK_RSS, _load, generate  # noqa: E402  (the same model and RSS probe)

_CHILD = """
import functools, json, os, sys, time
from tune2serve.components.export.merge import _lora_rows, stream
from tune2serve.components.export.export import export_checkpoint
if os.environ.get("BENCH_FINITE") == "off":
    _lora_rows.merge_rows = functools.partial(_lora_rows.merge_rows, check=False)  # RowMerger looks it up per call
    stream.check_finite = lambda *a, **k: None
t1 = time.perf_counter()
export_checkpoint(sys.argv[1], sys.argv[2], max_shard_size="1GB")
t2 = time.perf_counter()
json.dump({"export_s": t2 - t1, "rss": peak_rss()}, sys.stdout)
"""


def run_once(adapter: Path, out: Path, finite: str) -> dict:
    env = {**os.environ, "BENCH_FINITE": finite}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS + _CHILD, str(adapter), str(out)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"export ({finite}) failed: {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    shutil.rmtree(out)
    return {"wall": time.perf_counter() - start, **report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["1B", "2B", "quick"], default="1B")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"bench_finite: size={args.size} runs={args.runs} (medians, A/B alternated), "
          f"{os.cpu_count()} cores, load {_load()}")
    with tempfile.TemporaryDirectory(prefix="bench-finite-") as tmp:
        root = Path(tmp)
        _, adapter, nbytes = generate(root, args.size)
        run_once(adapter, root / "warm", "on")  # page cache warm for both variants
        results: dict[str, list[dict]] = {"on": [], "off": []}
        for i in range(args.runs):
            for variant in (("on", "off") if i % 2 == 0 else ("off", "on")):
                results[variant].append(run_once(adapter, root / f"out-{variant}", variant))
    med = {v: {k: statistics.median(r[k] for r in rs) for k in ("wall", "export_s", "rss")} for v, rs in results.items()}
    print(f"model: {nbytes / 1e9:.2f} GB of base weights")
    for v in ("off", "on"):
        print(f"  check {v:3}: wall {med[v]['wall']:.2f} s, export call {med[v]['export_s']:.2f} s, "
              f"peak RSS {med[v]['rss'] / 2**30:.2f} GiB")
    print(f"ratio with/without the check: wall {med['on']['wall'] / med['off']['wall']:.3f}, "
          f"export call {med['on']['export_s'] / med['off']['export_s']:.3f}")
    print(f"load at the end {_load()}")


if __name__ == "__main__":
    main()
