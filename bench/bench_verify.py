"""verify-traffic benchmark (not a timed test).

1. Requests needed to decide a canary at the chosen power, next to the textbook
   sample-size formula for the same effect size, and the exact power achieved.
2. With the local stack: wall time to send those requests to a real endpoint (median of
   several runs), and under 8 concurrent clients the failed client requests during a
   whole promotion and during a rollback (target 0).
3. The bake (``--bake-s``), for a 10 % canary under 8 clients whose requests half carry
   a marker: time to a decision at the 10 % step without and with the bake (median of
   ``--runs`` promotions each; the bake's extra time is its length plus one metrics
   read), and the failed client requests during a bake that rolls back a canary failing
   the marked requests (``local fault http-503 --match``): at most the canary's share
   of the marked traffic while it lasts.

Run: python bench/bench_verify.py [--no-stack] [--bake-only] [--runs 3] [--bake-s 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tune2serve.components.verify_traffic import stats  # noqa: E402


def sample_sizes() -> None:
    print("share  planned_n  formula_n(p0-d)  formula_n(p0+d)  exact_power(p0-d)  exact_power(p0+d)")
    for share in (0.05, 0.10, 0.25, 0.50):
        plan = stats.plan_requests(share)
        lo, hi = plan.alternatives
        print(f"{share:5.2f}  {plan.requests:9d}  {stats.sample_size(share, lo):15d}  {stats.sample_size(share, hi):15d}"
              f"  {stats.exact_power(plan.requests, share, lo):17.3f}  {stats.exact_power(plan.requests, share, hi):17.3f}")


def bake_bench(stack: object, api: object, prod: object, staging: object, runs: int, bake_s: float) -> None:
    from tests.verify_traffic.load import Load
    from tune2serve.components.verify_traffic.bake import BakePolicy
    from tune2serve.components.verify_traffic.canary import PromotionPlan, promote
    from tune2serve.components.verify_traffic.checks import Policy
    from tune2serve.components.verify_traffic.probe import probe_request_body
    from tune2serve.components.verify_traffic.verify import real_probes
    from tune2serve.localstack.faults import inject_fault

    bodies = (probe_request_body(), probe_request_body("please translate zq-marker into french"))
    policy = Policy(latency_slack_ms=2000.0)
    probe_for, client = real_probes(api)  # type: ignore[arg-type]
    serving = api.get_endpoint(prod.endpoint).deployed_models[0].model.split("@")[0]  # type: ignore[attr-defined]
    models = [m for m in (staging.model, prod.model) if m != serving] + [serving]  # type: ignore[attr-defined]
    decisions: dict[str, list[float]] = {"no bake": [], f"bake {bake_s:g} s": []}
    for i in range(runs):
        for label, seconds in (("no bake", 0.0), (f"bake {bake_s:g} s", bake_s)):
            model = models[0]
            plan = PromotionPlan(prod.endpoint, model, (10, 100), "bench-bake", None, step_timeout_s=60,  # type: ignore[attr-defined]
                                 deploy_timeout_s=180, lease_wait_s=0, policy=policy,
                                 bake=BakePolicy(seconds, min_requests=10, max_latency_ratio=20.0))
            with Load(prod.dns, prod.endpoint, bodies=bodies):  # type: ignore[attr-defined]
                outcome = promote(api, plan, probe_for)  # type: ignore[arg-type]
            assert outcome.outcome == "promoted", outcome.reason
            step = outcome.steps[0]
            bake = step.bake
            decisions[label].append(step.elapsed_s + ((bake.window[1] - bake.window[0]) if bake else 0.0))
            models.reverse()  # the other model is promoted next
    base = statistics.median(decisions["no bake"])
    for label, times in decisions.items():
        print(f"10% canary, time to a decision at the step ({label}): median {statistics.median(times):.1f} s "
              f"of {runs} ({statistics.median(times) / base:.2f}x the probe alone)")
    target = models[0]
    inject_fault(stack.api_endpoint, "http-503", target=target, count=10**6, match="zq-marker")  # type: ignore[attr-defined]
    plan = PromotionPlan(prod.endpoint, target, (10, 100), "bench-bake", None, step_timeout_s=60,  # type: ignore[attr-defined]
                         deploy_timeout_s=180, lease_wait_s=0, policy=policy,
                         bake=BakePolicy(bake_s, min_requests=10, max_latency_ratio=20.0))
    with Load(prod.dns, prod.endpoint, bodies=bodies) as load:  # type: ignore[attr-defined]
        outcome = promote(api, plan, probe_for)  # type: ignore[arg-type]
    inject_fault(stack.api_endpoint, "clear")  # type: ignore[attr-defined]
    client.close()
    assert outcome.outcome == "rolled_back", outcome.reason
    bake = outcome.steps[0].bake
    during = sum(1 for t in load.failed_at if bake.window[0] <= t <= bake.window[1])
    print(f"rolled-back bake (canary fails the marked half of its traffic): {during} client requests failed during "
          f"the {bake.window[1] - bake.window[0]:.1f} s bake, {len(load.failed)} of {load.total} over the whole "
          f"promotion ({len(load.failed) / max(1, load.total):.1%}; canary share 10% x marked 50% = 5% while it "
          f"serves, the probe's time included); the bake saw canary {bake.canary.errors}/{bake.canary.requests} "
          f"errors vs serving {bake.baseline.errors}/{bake.baseline.requests}")


def on_stack(runs: int, bake_only: bool = False, bake_s: float = 5.0) -> None:
    import os

    from tests.stack_fixtures import StackHandle
    from tests.verify_traffic.conftest import deploy_tiny
    from tests.verify_traffic.load import Load
    from tune2serve.components.verify_traffic.canary import PromotionPlan, promote
    from tune2serve.components.verify_traffic.checks import Policy
    from tune2serve.components.verify_traffic.endpoint_api import EndpointApi
    from tune2serve.components.verify_traffic.verify import real_probes
    from tune2serve.components.vertex.clients import target
    from tune2serve.localstack.faults import inject_fault
    from tune2serve.localstack.stack import LocalStack

    stack = LocalStack(Path(tempfile.mkdtemp(prefix="bench-verify-")))
    stack.up()
    try:
        os.environ.update(stack.env())
        c = stack.config
        handle = StackHandle(stack.home, stack.env(), stack.api_endpoint, c.project, c.region, c.bucket)

        class Tmp:
            def mktemp(self, name: str) -> Path:
                return Path(tempfile.mkdtemp(prefix=name))

        prod = deploy_tiny(handle, Tmp(), "old", 1)  # type: ignore[arg-type]
        staging = deploy_tiny(handle, Tmp(), "new", 2)  # type: ignore[arg-type]
        api = EndpointApi(target(c.project, c.region))
        if bake_only:
            bake_bench(stack, api, prod, staging, runs, bake_s)
            return
        probe_for, client = real_probes(api)
        state = api.get_endpoint(prod.endpoint)
        for share in (0.10, 0.50):
            n = stats.plan_requests(share).requests
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                probe_for(state)(n)
                times.append(time.perf_counter() - started)
            print(f"deciding a {share:.0%} step: {n} requests, median {statistics.median(times):.2f} s "
                  f"({n / statistics.median(times):.0f} req/s, 4 probe workers)")
        policy = Policy(latency_slack_ms=2000.0)
        # The rollback is caused by routing that disagrees with the split (the canary never
        # answers): no client request fails because of the canary itself, so every failed
        # client request would be the rollback's own doing.
        plan = PromotionPlan(prod.endpoint, staging.model, (10, 100), "bench", None, step_timeout_s=60,
                             deploy_timeout_s=180, lease_wait_s=0, policy=policy)
        inject_fault(stack.api_endpoint, "routing-skew", target=staging.model, percent=0)
        with Load(prod.dns, prod.endpoint) as load:
            started = time.perf_counter()
            outcome = promote(api, plan, probe_for)
        inject_fault(stack.api_endpoint, "clear")
        assert outcome.outcome == "rolled_back", outcome.reason
        print(f"rollback under 8 clients (routing skew 10% -> 0%): outcome {outcome.outcome}, {time.perf_counter() - started:.1f} s, "
              f"client requests ok {load.ok}, failed {len(load.failed)} ({outcome.reason[:100]})")
        plan = PromotionPlan(prod.endpoint, staging.model, (50, 100), "bench", staging.endpoint, step_timeout_s=60,
                             deploy_timeout_s=180, lease_wait_s=0, policy=policy)
        with Load(prod.dns, prod.endpoint) as load:
            started = time.perf_counter()
            outcome = promote(api, plan, probe_for)
        assert outcome.outcome == "promoted", outcome.reason
        print(f"promotion under 8 clients: outcome {outcome.outcome}, {time.perf_counter() - started:.1f} s, "
              f"client requests ok {load.ok}, failed {len(load.failed)} ({outcome.reason[:100]})")
        client.close()
        bake_bench(stack, api, prod, staging, runs, bake_s)
    finally:
        stack.down()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-stack", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bake-only", action="store_true", help="only part 3 (the bake)")
    parser.add_argument("--bake-s", type=float, default=5.0)
    args = parser.parse_args()
    sample_sizes()
    if not args.no_stack:
        on_stack(args.runs, args.bake_only, args.bake_s)


if __name__ == "__main__":
    main()
