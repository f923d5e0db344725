"""Local stack benchmark (not a test): prints, in one run,
- `local up` cold start time (fresh home);
- deploy-to-ready time of a tiny model through the SDK's CustomModel.deploy;
- the latency the Vertex data plane (HTTPS + routing) adds over calling the model server
  directly, both with keep-alive connections, median of interleaved runs;
- requests/s sustained by 8 concurrent clients for --duration seconds, with the error count.

    python bench/bench_local.py [--duration 30] [--rounds 5] [--per-round 20]
"""

from __future__ import annotations

import argparse
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=20)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()

    import httpx

    from tune2serve.demo.tiny_models import make_tiny_model
    from tune2serve.localstack.stack import LocalStack

    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        stack = LocalStack(Path(tmp) / "home")
        t0 = time.perf_counter()
        stack.up()
        cold = time.perf_counter() - t0
        try:
            os.environ.update(stack.env())
            model = make_tiny_model(Path(tmp) / "tiny")
            from tests.stack_fixtures import StackHandle

            cfg = stack.config
            handle = StackHandle(stack.home, stack.env(), stack.api_endpoint, cfg.project, cfg.region, cfg.bucket)
            uri = handle.upload(model, "bench/tiny")
            handle.vertex_init()
            from google.cloud import aiplatform
            from vertexai.preview import model_garden

            t0 = time.perf_counter()
            endpoint = model_garden.CustomModel(gcs_uri=uri).deploy(endpoint_display_name="bench")
            deploy_s = time.perf_counter() - t0
            ep = aiplatform.Endpoint(endpoint.resource_name)
            dns = ep.dedicated_endpoint_dns
            [dm] = stack.status()["endpoints"][0]["deployedModels"]
            replica = f"http://127.0.0.1:{dm['replicas'][0]['port']}"
            ctx = ssl.create_default_context(cafile=stack.env()["REQUESTS_CA_BUNDLE"])
            direct = httpx.Client(base_url=replica, timeout=30)
            via = httpx.Client(base_url=f"https://{dns}", verify=ctx, timeout=30)
            body = {"prompt": "hello", "max_tokens": 1, "temperature": 0}
            pairs = {
                "completions (direct) vs :predict (data plane)": (
                    lambda: direct.post("/v1/completions", json=body),
                    lambda: via.post(f"/v1/{ep.resource_name}:predict", json={"instances": [body]})),
                "chat (direct) vs chat/completions (data plane)": (
                    lambda: direct.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
                    lambda: via.post(f"/v1beta1/{ep.resource_name}/chat/completions",
                                     json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})),
            }
            overheads = {}
            for label, (call_direct, call_via) in pairs.items():
                call_direct().raise_for_status(), call_via().raise_for_status()  # warm both connections
                d_all, v_all = [], []
                for _ in range(args.rounds):
                    for _ in range(args.per_round):
                        t = time.perf_counter(); call_direct().raise_for_status(); d_all.append(time.perf_counter() - t)
                        t = time.perf_counter(); call_via().raise_for_status(); v_all.append(time.perf_counter() - t)
                overheads[label] = (statistics.median(d_all), statistics.median(v_all))

            ok, errors = [0] * args.clients, [0] * args.clients
            stop = time.perf_counter() + args.duration

            def client(i: int) -> None:
                with httpx.Client(base_url=f"https://{dns}", verify=ctx, timeout=30) as c:
                    while time.perf_counter() < stop:
                        r = c.post(f"/v1/{ep.resource_name}:predict", json={"instances": [body]})
                        if r.status_code == 200:
                            ok[i] += 1
                        else:
                            errors[i] += 1

            threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
        finally:
            stack.down()

    print(f"local up, cold start:            {cold:6.2f} s")
    print(f"deploy to ready (tiny model):    {deploy_s:6.2f} s  (SDK CustomModel.deploy incl. LRO polling)")
    for label, (d, v) in overheads.items():
        print(f"{label}: direct {d * 1e3:6.2f} ms, via data plane {v * 1e3:6.2f} ms, "
              f"added {(v - d) * 1e3:5.2f} ms median (ratio {v / d:4.2f}x)")
    print(f"{args.clients} clients x {args.duration:.0f} s on :predict: {sum(ok) / elapsed:7.1f} req/s, "
          f"{sum(ok)} ok, {sum(errors)} errors")
    return 0 if sum(errors) == 0 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
