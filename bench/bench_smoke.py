"""Smoke-test overhead on the local stack (tiny tuned model), medians of several runs.

1. Per-request overhead: the latency the smoke test measures for a unary chat request
   (``DataPlane.send``) versus the same request timed by a bare ``httpx`` client in the
   same run, interleaved. Target: ratio within 1.10.
2. Total smoke-test wall time (golden prompts + every request kind) once the endpoint is
   ready. Target: < 10 s.

Run: ``python bench/bench_smoke.py [--runs 7]``. Starts and stops its own local stack.
"""

from __future__ import annotations

import argparse
import os
import ssl
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    import httpx

    from tune2serve.components.deploy.deploy import deploy_export
    from tune2serve.components.deploy.request import DeploySpec
    from tune2serve.components.export.export import export_checkpoint
    from tune2serve.components.smoke_test import requests as rq
    from tune2serve.components.smoke_test.dataplane import DataPlane
    from tune2serve.components.smoke_test.golden import parse_golden
    from tune2serve.components.vertex.machine_spec import MachineSpec
    from tune2serve.components.smoke_test.smoke import run_smoke_test
    from tune2serve.components.vertex.dedicated_endpoint import request_url
    from tune2serve.components.vertex.resources import endpoint_name
    from tune2serve.demo.tiny_models import make_tiny_model
    from tune2serve.demo.tuned_adapter import golden_jsonl, make_tuned_adapter
    from tune2serve.localstack.stack import LocalStack

    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as tmp:
        root = Path(tmp)
        stack = LocalStack(root / "stack")
        try:
            stack.up()
            os.environ.update(stack.env())
            config = stack.config
            base = make_tiny_model(root / "base")
            adapter = make_tuned_adapter(base, root / "adapter")
            uri = f"gs://{config.bucket}/exports/bench-tuned"
            export_checkpoint(str(adapter), uri, base_model=str(base))
            dep = deploy_export(DeploySpec(uri, config.project, config.region,
                                           MachineSpec("g2-standard-12", "NVIDIA_L4", 1)))
            golden = golden_jsonl()
            run_smoke_test(dep.endpoint, config.project, config.region, golden)  # warm-up, not timed

            case = parse_golden(golden)[0]
            name = endpoint_name(dep.endpoint)
            url = request_url("chat", dep.dedicated_endpoint_dns, name)
            body = rq.request_body("chat", case.messages, case.prompt, model=dep.model.rsplit("/", 1)[-1],
                                   max_tokens=case.max_tokens)
            ctx = ssl.create_default_context(cafile=stack.env()["REQUESTS_CA_BUNDLE"])
            bare_t, smoke_t = [], []
            with httpx.Client(verify=ctx, timeout=60) as bare, httpx.Client(verify=ctx, timeout=60) as client:
                dp = DataPlane(client, lambda: None)
                for _ in range(args.runs * 3):
                    t = time.perf_counter()
                    bare.post(url, json=body, headers={"Content-Type": "application/json"}).raise_for_status()
                    bare_t.append(time.perf_counter() - t)
                    smoke_t.append(dp.send("chat", url, body).latency_s)
            walls = []
            for _ in range(args.runs):
                t = time.perf_counter()
                result = run_smoke_test(dep.endpoint, config.project, config.region, golden)
                walls.append(time.perf_counter() - t)
                assert result.passed
        finally:
            stack.down()
    b, s = statistics.median(bare_t), statistics.median(smoke_t)
    print(f"per-request latency, median of {len(bare_t)}: bare httpx {b * 1000:.1f} ms, "
          f"smoke test measures {s * 1000:.1f} ms, ratio {s / b:.3f} (target <= 1.10)")
    print(f"smoke-test wall time, median of {len(walls)}: {statistics.median(walls):.2f} s "
          f"(min {min(walls):.2f}, max {max(walls):.2f}; target < 10 s; {len(result.checks)} checks)")


if __name__ == "__main__":
    main()
