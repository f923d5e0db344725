"""The quality gate's cost on the local stack, against smoke-test's on the same cases.

For N cases (the demo's golden prompts, repeated under new names) on the tiny tuned
model (candidate) and its base (baseline), each served by the stack's model servers:

1. smoke-test of the candidate with the N cases as golden prompts (one request per case,
   sequential, plus its five request-kind checks): wall time and requests sent;
2. ``tune2serve eval`` candidate vs baseline at the default concurrency (every case to
   both endpoints): wall time and requests sent (retries included);
3. with ``--judge``: the same eval with the candidate's endpoint as the judge (two more
   requests per case).

Printed: medians over ``--runs`` paired, interleaved runs, the eval/smoke wall ratio,
requests per case, and the 1-minute load average around each run (the machine is shared:
quote the load with the figures). Expect eval ≈ 2 requests per case against smoke's 1,
in less than twice smoke's time where the concurrency overlaps the two endpoints.

Run: ``python bench/bench_eval.py [--cases 30] [--runs 3] [--judge]``. Starts and stops its own local stack
(``transformers serve`` replicas: two models at once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def cases_jsonl(n: int, max_tokens: int) -> str:
    from tune2serve.demo.tuned_adapter import GOLDEN

    return "".join(json.dumps({"name": f"{GOLDEN[i % len(GOLDEN)]['name']}-{i}", "prompt": GOLDEN[i % len(GOLDEN)]["prompt"],
                               "expect": GOLDEN[i % len(GOLDEN)]["expect"], "max_tokens": max_tokens}) + "\n"
                   for i in range(n))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16, help="per case (smoke-test's default is 16)")
    parser.add_argument("--judge", action="store_true", help="also time eval with a judge (the tuned endpoint)")
    args = parser.parse_args()

    from tune2serve.components.deploy.deploy import deploy_export
    from tune2serve.components.deploy.request import DeploySpec
    from tune2serve.components.export.export import export_checkpoint
    from tune2serve.components.quality_gate.evalset import parse_eval_set
    from tune2serve.components.quality_gate.gate import DEFAULT_CONCURRENCY, GateRequest, run_eval
    from tune2serve.components.smoke_test.smoke import run_smoke_test
    from tune2serve.components.vertex.machine_spec import MachineSpec
    from tune2serve.demo.tiny_models import make_tiny_model
    from tune2serve.demo.tuned_adapter import make_tuned_adapter
    from tune2serve.localstack.stack import LocalStack

    text = cases_jsonl(args.cases, args.max_tokens)
    eval_set = parse_eval_set(text, "bench cases")
    rows: dict[str, list[tuple[float, int, float]]] = {"smoke-test": [], "eval": [], "eval + judge": []}
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        root = Path(tmp)
        stack = LocalStack(root / "stack")
        try:
            stack.up(engine="transformers")  # two models at once: the quick engine (vLLM is one heavy process each)
            os.environ.update(stack.env())
            config = stack.config
            base = make_tiny_model(root / "base")
            adapter = make_tuned_adapter(base, root / "adapter")
            spec = MachineSpec("g2-standard-12", "NVIDIA_L4", 1)
            uris = {"tuned": f"gs://{config.bucket}/exports/bench-tuned", "base": f"gs://{config.bucket}/exports/bench-base"}
            export_checkpoint(str(adapter), uris["tuned"], base_model=str(base))
            export_checkpoint(str(base), uris["base"])
            tuned, baseline = (deploy_export(DeploySpec(uris[w], config.project, config.region, spec)).endpoint
                               for w in ("tuned", "base"))
            plain = GateRequest(tuned, baseline, config.project, config.region)
            judged = GateRequest(tuned, baseline, config.project, config.region, judge_endpoint=tuned,
                                 judge_prompt="{{question}}\nA: {{answer_a}}\nB: {{answer_b}}\nwinner?")
            run_smoke_test(tuned, config.project, config.region, text)  # warm-up, not timed
            run_eval(plain, eval_set)  # warm-up, not timed
            for _ in range(args.runs):
                load = os.getloadavg()[0]
                t = time.perf_counter()
                smoke = run_smoke_test(tuned, config.project, config.region, text)
                rows["smoke-test"].append((time.perf_counter() - t, sum(c.exchange.attempts if c.exchange else 1
                                                                        for c in smoke.checks), load))
                for name, request in (("eval", plain), ("eval + judge", judged))[: 2 if args.judge else 1]:
                    load = os.getloadavg()[0]
                    t = time.perf_counter()
                    result = run_eval(request, eval_set)
                    rows[name].append((time.perf_counter() - t, result.requests, load))
        finally:
            stack.down()
    smoke_wall = statistics.median(r[0] for r in rows["smoke-test"])
    print(f"{args.cases} cases, max_tokens {args.max_tokens}, eval concurrency {DEFAULT_CONCURRENCY}, "
          f"{args.runs} paired runs, medians (load: 1-minute average at each run's start, {os.cpu_count()} cores)")
    for name, got in rows.items():
        if not got:
            continue
        wall, requests = statistics.median(r[0] for r in got), statistics.median(r[1] for r in got)
        print(f"{name:>13}: {wall:7.2f} s wall ({wall / smoke_wall:.2f}x smoke-test), {requests:.0f} requests "
              f"({requests / args.cases:.2f} per case), load {min(r[2] for r in got):.1f}-{max(r[2] for r in got):.1f}")


if __name__ == "__main__":
    main()
