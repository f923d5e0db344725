"""verify-traffic benchmark (not a timed test).

1. Requests needed to decide a canary at the chosen power, next to the textbook
   sample-size formula for the same effect size, and the exact power achieved.
2. With the local stack: wall time to send those requests to a real endpoint (median of
   several runs), and under 8 concurrent clients the failed client requests during a
   whole promotion and during a rollback (target 0).

Run: python bench/bench_verify.py [--no-stack] [--runs 3]
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


def on_stack(runs: int) -> None:
    import os

    from tests.stack_fixtures import StackHandle
    from tests.verify_traffic.conftest import deploy_tiny
    from tests.verify_traffic.load import Load
    from tune2serve.components.verify_traffic.canary import PromotionPlan, promote
    from tune2serve.components.verify_traffic.checks import Policy
    from tune2serve.components.verify_traffic.endpoint_api import EndpointApi
    from tune2serve.components.verify_traffic.verify import real_probes
    from tune2serve.components.vertex.clients import target
    from tune2serve.pipelines.local.faults import inject_fault
    from tune2serve.pipelines.local.stack import LocalStack

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
    finally:
        stack.down()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-stack", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sample_sizes()
    if not args.no_stack:
        on_stack(args.runs)


if __name__ == "__main__":
    main()
