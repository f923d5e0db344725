"""End-to-end wall time of `tune2serve run` (the demo) on a cold home, per step, and the
pipeline's own overhead: kfp.local orchestration (a subprocess per step, executor
input/output files) versus calling the same five steps' functions in one process.

Not a timed test: it prints figures and a ratio measured in the same run. Usage:
    python bench/bench_e2e.py [--repeats N]
Each repeat uses a fresh home (cold: stack start, demo model and adapter, upload), then a
second run on the same home (warm) for the orchestration comparison. Stacks are stopped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def direct_steps(args: dict, workdir: Path) -> dict[str, float]:
    """The five steps (and finalize) as plain function calls in this process, same inputs."""
    from tune2serve.components.deploy.deploy import deploy_export
    from tune2serve.components.deploy.request import DeploySpec
    from tune2serve.components.export.export import export_checkpoint
    from tune2serve.components.smoke_test.smoke import raise_if_failed, run_smoke_test
    from tune2serve.components.validate import artifacts
    from tune2serve.components.verify_traffic.finalize import finalize
    from tune2serve.components.verify_traffic.verify import verify_traffic

    t: dict[str, float] = {}
    s = time.monotonic()
    exported = export_checkpoint(args["source"], args["export_dest"] + "-direct", base_model=args["base_model"] or None)
    t["export"], s = time.monotonic() - s, time.monotonic()
    report = artifacts.validate_for_pipeline(exported.dest, artifacts.options_from_parameters(False, "", "", 0, False, ""))
    assert report.ok
    t["validate"], s = time.monotonic() - s, time.monotonic()
    run_id = f"bench-direct-{int(time.time())}"
    d = deploy_export(DeploySpec(export_uri=exported.dest, project=args["project"], region=args["region"], run_id=run_id))
    t["deploy"], s = time.monotonic() - s, time.monotonic()
    raise_if_failed(run_smoke_test(d.endpoint, args["project"], args["region"], args["golden"], golden_source="bench"))
    t["smoke-test"], s = time.monotonic() - s, time.monotonic()
    v = verify_traffic(project=args["project"], region=args["region"], endpoint=d.endpoint, model=d.model,
                       production_endpoint=None, steps=None, canary_percent=None, significance=0.01,
                       keep_previous_s=0, run_id="bench")
    assert v.ok, v.reason
    t["verify-traffic"], s = time.monotonic() - s, time.monotonic()
    finalize(project=args["project"], region=args["region"], production_endpoint="", run_id=run_id,
             pipeline_state="SUCCEEDED")
    t["finalize"] = time.monotonic() - s
    return t


def one_repeat() -> tuple[float, dict[str, float], float, float, dict[str, float]]:
    from tune2serve.pipelines import kfp_local
    from tune2serve.localstack.stack import LocalStack
    from tune2serve.pipelines.main_job import JobOptions, pipeline_arguments, run_job

    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        home = Path(tmp) / ".tune2serve"
        try:
            started = time.monotonic()
            cold = run_job(JobOptions(home=str(home)))
            cold_wall = time.monotonic() - started
            assert cold.ok, cold.message
            # warm: same home, the pipeline alone vs the same steps called directly
            stack = LocalStack(home)
            config = stack.config
            from tune2serve.demo.tuned_adapter import golden_jsonl

            prefix = f"gs://{config.bucket}/demo"
            uploads = sorted(str(p) for p in (home / "runs").iterdir())
            stamp = Path(uploads[0]).name
            args = pipeline_arguments(JobOptions(), source=f"{prefix}/{stamp}/tuning-output",
                                      base_model=f"{prefix}/{stamp}/base",
                                      export_dest=f"gs://{config.bucket}/exports/bench-warm", project=config.project,
                                      region=config.region, golden=golden_jsonl(), production_endpoint="")
            with kfp_local.environment(stack.env()):
                run = kfp_local.run_pipeline(kfp_local.promote_pipeline_spec(), args, pipeline_root=Path(tmp) / "warm",
                                             env=stack.env())
                assert run.succeeded, [s.message for s in run.steps if s.message]
                s = time.monotonic()
                direct = direct_steps(args, Path(tmp))
                direct_wall = time.monotonic() - s
            return cold_wall, cold.timings, run.wall_s, direct_wall, direct
        finally:
            LocalStack(home).down()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=1)
    n = parser.parse_args().repeats
    from tune2serve.components import logs

    logs.configure(level="WARNING")
    results = [one_repeat() for _ in range(n)]
    cold = statistics.median(r[0] for r in results)
    print(f"machine: {__import__('os').cpu_count()} cores (shared, noisy); repeats: {n} (medians)")
    print(f"tune2serve run, cold home (stack start + demo model/adapter + upload + pipeline): {cold:.1f} s "
          f"(target < 120 s)")
    for name in results[0][1]:
        print(f"  {name:<24} {statistics.median(r[1][name] for r in results):7.1f} s")
    pipe, direct = statistics.median(r[2] for r in results), statistics.median(r[3] for r in results)
    print(f"warm pipeline via kfp.local: {pipe:.1f} s; same steps as direct calls in one process: {direct:.1f} s; "
          f"ratio {pipe / direct:.2f}x; kfp.local overhead {pipe - direct:+.1f} s")
    for name in results[0][4]:
        print(f"  direct {name:<17} {statistics.median(r[4][name] for r in results):7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
