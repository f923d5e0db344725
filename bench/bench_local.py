"""Local stack benchmark (not a test): prints, in one run, for each engine asked for
(vLLM, the default, and ``transformers serve``, the quick engine), on the same tiny model
(a Llama at head size 64, the size vLLM's CPU attention runs, bf16):

- `local up` cold start time (fresh home);
- deploy-to-ready through the SDK's CustomModel.deploy (LRO polling included; ready means a
  real completion answered, not /health), ``--deploys`` times, median/min/max, each
  endpoint undeployed and deleted before the next; the ratio of the two engines' medians;
- the first answer after ready, through the data plane;
- the latency the Vertex data plane (HTTPS + routing) adds over calling the model server
  directly, both with keep-alive connections, median of interleaved runs;
- requests/s sustained by 8 concurrent clients for --duration seconds, with the error count;
- the load average before and after each engine's runs (a 2-core machine shared with other
  work: compare medians taken at similar load).

    python bench/bench_local.py [--engines vllm transformers] [--deploys 3] [--duration 30]
                                [--rounds 5] [--per-round 20]
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
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EngineRun:
    engine: str
    version: str = ""
    cold_up_s: float = 0.0
    deploy_s: list[float] = field(default_factory=list)
    first_answer_s: float = 0.0
    overheads: dict[str, tuple[float, float]] = field(default_factory=dict)
    req_per_s: float = 0.0
    ok: int = 0
    errors: int = 0
    load: tuple[float, float] = (0.0, 0.0)


def run_engine(engine: str, model: Path, args: argparse.Namespace) -> EngineRun:
    """One stack on ``engine``: cold up, --deploys deploy-to-ready timings, then latency and load."""
    import httpx

    from tests.stack_fixtures import StackHandle
    from tune2serve.localstack.serving import engine_version
    from tune2serve.localstack.stack import LocalStack

    out = EngineRun(engine, engine_version(engine))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix=f"bench-local-{engine}-") as tmp:
        stack = LocalStack(Path(tmp) / "home")
        t0 = time.perf_counter()
        stack.up(engine=engine)
        out.cold_up_s = time.perf_counter() - t0
        saved_env = dict(os.environ)
        try:
            os.environ.update(stack.env())
            cfg = stack.config
            handle = StackHandle(stack.home, stack.env(), stack.api_endpoint, cfg.project, cfg.region, cfg.bucket)
            uri = handle.upload(model, "bench/tiny")
            handle.vertex_init()
            from google.cloud import aiplatform
            from vertexai.preview import model_garden

            ctx = ssl.create_default_context(cafile=stack.env()["REQUESTS_CA_BUNDLE"])
            body = {"prompt": "hello", "max_tokens": 1, "temperature": 0}
            for i in range(args.deploys):
                t0 = time.perf_counter()
                endpoint = model_garden.CustomModel(gcs_uri=uri).deploy(endpoint_display_name=f"bench-{i}")
                out.deploy_s.append(time.perf_counter() - t0)
                ep = aiplatform.Endpoint(endpoint.resource_name)
                if i < args.deploys - 1:
                    ep.undeploy_all()
                    ep.delete()
            dns = ep.dedicated_endpoint_dns
            via = httpx.Client(base_url=f"https://{dns}", verify=ctx, timeout=60)
            t0 = time.perf_counter()
            via.post(f"/v1/{ep.resource_name}:predict", json={"instances": [body]}).raise_for_status()
            out.first_answer_s = time.perf_counter() - t0
            [dm] = [e for e in stack.status()["endpoints"] if e["name"] == ep.resource_name][0]["deployedModels"]
            direct = httpx.Client(base_url=f"http://127.0.0.1:{dm['replicas'][0]['port']}", timeout=60)
            chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
            pairs = {
                "completions (direct) vs :predict (data plane)": (
                    lambda: direct.post("/v1/completions", json=body),
                    lambda: via.post(f"/v1/{ep.resource_name}:predict", json={"instances": [body]})),
                "chat (direct) vs chat/completions (data plane)": (
                    lambda: direct.post("/v1/chat/completions", json=chat),
                    lambda: via.post(f"/v1beta1/{ep.resource_name}/chat/completions", json=chat)),
            }
            for label, (call_direct, call_via) in pairs.items():
                call_direct().raise_for_status(), call_via().raise_for_status()  # warm both connections
                d_all, v_all = [], []
                for _ in range(args.rounds):
                    for _ in range(args.per_round):
                        t = time.perf_counter(); call_direct().raise_for_status(); d_all.append(time.perf_counter() - t)
                        t = time.perf_counter(); call_via().raise_for_status(); v_all.append(time.perf_counter() - t)
                out.overheads[label] = (statistics.median(d_all), statistics.median(v_all))

            ok, errors = [0] * args.clients, [0] * args.clients
            stop = time.perf_counter() + args.duration

            def client(i: int) -> None:
                with httpx.Client(base_url=f"https://{dns}", verify=ctx, timeout=60) as c:
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
            out.req_per_s, out.ok, out.errors = sum(ok) / (time.perf_counter() - t0), sum(ok), sum(errors)
        finally:
            os.environ.clear()
            os.environ.update(saved_env)
            stack.down()
    out.load = (load_before, os.getloadavg()[0])
    return out


def report(runs: list[EngineRun], args: argparse.Namespace) -> None:
    for r in runs:
        print(f"== {r.engine} {r.version} (load average {r.load[0]:.1f} before, {r.load[1]:.1f} after)")
        print(f"local up, cold start:            {r.cold_up_s:6.2f} s")
        print(f"deploy to ready (tiny model):    median {statistics.median(r.deploy_s):6.2f} s over {len(r.deploy_s)} "
              f"(min {min(r.deploy_s):.2f}, max {max(r.deploy_s):.2f}; SDK CustomModel.deploy incl. LRO polling)")
        print(f"first answer after ready:        {r.first_answer_s * 1e3:6.1f} ms (:predict, 1 token, via data plane)")
        for label, (d, v) in r.overheads.items():
            print(f"{label}: direct {d * 1e3:6.2f} ms, via data plane {v * 1e3:6.2f} ms, "
                  f"added {(v - d) * 1e3:5.2f} ms median (ratio {v / d:4.2f}x)")
        print(f"{args.clients} clients x {args.duration:.0f} s on :predict: {r.req_per_s:7.1f} req/s, "
              f"{r.ok} ok, {r.errors} errors")
    by = {r.engine: r for r in runs}
    if "vllm" in by and "transformers" in by:
        v, t = statistics.median(by["vllm"].deploy_s), statistics.median(by["transformers"].deploy_s)
        print(f"deploy to ready, vllm / transformers (medians): {v:.2f} s / {t:.2f} s = {v / t:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--engines", nargs="+", choices=("vllm", "transformers"), default=["vllm", "transformers"])
    ap.add_argument("--deploys", type=int, default=3)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--per-round", type=int, default=20)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-local-model-") as tmp:
        from tests.localstack.test_vllm_serving import tiny_llama  # the vLLM stack tests' model

        model = tiny_llama(Path(tmp), "tiny-head64", 64)
        runs = [run_engine(engine, model, args) for engine in args.engines]
    report(runs, args)
    return 0 if all(r.errors == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
