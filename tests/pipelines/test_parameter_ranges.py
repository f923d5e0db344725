"""Every numeric pipeline parameter has a documented range (in its description, as the
Vertex AI UI shows it), its default is in it, and a value outside it — NaN, Inf, a
negative, a 0 that means nothing, a huge number — fails before any API call: in
``submit``/``schedule``/``run`` before anything is sent, and in the step that takes it
at its first line (the component's own function, run here as the pipeline runs it)."""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tune2serve.cli.main import main
from tune2serve.components import ranges
from tune2serve.components.errors import UsageError
from tune2serve.pipelines import submit

REPO = Path(__file__).resolve().parents[2]
COMPILED = REPO / "compiled" / "promote_checkpoint.yaml"
NUMERIC_TYPES = ("NUMBER_INTEGER", "NUMBER_DOUBLE")
# String parameters that carry numbers (sizes, quantities, a list of percents).
NUMBER_STRINGS = {"max_shard_size", "export_min_worker_size", "export_cpu", "export_memory", "steps"}


@pytest.fixture(scope="module")
def template() -> submit.PipelineTemplate:
    return submit.load_template(COMPILED)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records (and refuses) every outgoing connection."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise ConnectionRefusedError(f"test: no network ({address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def test_every_numeric_parameter_has_a_range_in_its_description(template: submit.PipelineTemplate) -> None:
    numeric = {n for n, p in template.inputs.items() if p.type in NUMERIC_TYPES} | NUMBER_STRINGS
    assert numeric == set(ranges.PIPELINE), "a numeric pipeline parameter without a range (or a stale range)"
    for name in numeric:
        assert f"Range: {ranges.describe_parameter(name)}." in " ".join(template.inputs[name].description.split())


def test_the_compiled_defaults_are_in_range(template: submit.PipelineTemplate) -> None:
    import yaml

    root = yaml.safe_load(COMPILED.read_text())["root"]["inputDefinitions"]["parameters"]
    defaults = {n: d["defaultValue"] for n, d in root.items() if "defaultValue" in d and n in ranges.PIPELINE}
    defaults = {n: int(v) if template.inputs[n].type == "NUMBER_INTEGER" else v for n, v in defaults.items()}
    assert set(defaults) == set(ranges.PIPELINE)
    assert ranges.parameter_problems(defaults) == []
    assert defaults["canary_percent"] == 10  # the share it means, not 0-meaning-10


def _hostile_for(name: str) -> st.SearchStrategy[Any]:
    spec = ranges.PIPELINE[name]
    if isinstance(spec, (ranges.Number,)):
        zero_ok = name in {"bake_s", "keep_previous_s", "max_error_rate_delta", "accelerator_count", "eval_margin",
                           "eval_delta"}
        values: list[Any] = [math.nan, math.inf, -math.inf, 10**13, 1e300, "10", None, True, [1]]
        return st.one_of(st.sampled_from(values + ([] if zero_ok else [0, 0.0])),
                         st.integers(max_value=-1), st.floats(max_value=-1e-9, allow_nan=False),
                         st.integers(min_value=10**7))
    if isinstance(spec, ranges.Size):
        return st.one_of(st.sampled_from(["0", "0B", "-1GB", "nan", "inf", "1e9", "5 parsecs", "9" * 400, 5.0, None]),
                         st.integers(max_value=0), st.integers(min_value=10**16).map(lambda n: f"{n}TB"))
    if isinstance(spec, ranges.Percents):
        return st.sampled_from(["10,,100", ",", "0,100", "nan", "10,inf", "-5,100", "50,10", "10,101", 7])
    return st.one_of(st.sampled_from(["0", "0m", "-8", "nan", "inf", "8 cores", "1e3", 8, None]),
                     st.text(alphabet="abcxyz. -", max_size=6))


@pytest.mark.parametrize("name", sorted(ranges.PIPELINE))
@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_hostile_values_are_refused_naming_the_parameter(name: str, data: st.DataObject) -> None:
    value = data.draw(_hostile_for(name))
    with pytest.raises(UsageError, match=rf"^parameter {name}: "):
        ranges.check_parameter_values({name: value})


def test_zero_means_none_only_where_documented() -> None:
    assert ranges.parameter_problems({"accelerator_count": 0, "bake_s": 0, "keep_previous_s": 0,
                                      "max_error_rate_delta": 0, "steps": ""}) == []
    assert len(ranges.parameter_problems({n: 0 for n in ("canary_percent", "min_replica_count", "max_replica_count",
                                                         "deploy_timeout_s", "export_workers", "min_bake_requests",
                                                         "significance")})) == 7


def _step(component: Any) -> Any:
    """The function a pipeline step runs (what the compiled YAML embeds)."""
    return component.python_func


STEP_CALLS = [
    pytest.param("verify_traffic", dict(endpoint="e", model="m", production_endpoint="p", project="p", region="r",
                                        canary_percent=10, steps="", significance=0.01, keep_previous_s=0,
                                        metrics=None, report_md=None, report_html=None, bake_s=math.inf),
                 "bake_s", id="verify-traffic bake_s=inf"),
    pytest.param("verify_traffic", dict(endpoint="e", model="m", production_endpoint="p", project="p", region="r",
                                        canary_percent=0, steps="", significance=0.01, keep_previous_s=0,
                                        metrics=None, report_md=None, report_html=None),
                 "canary_percent", id="verify-traffic canary_percent=0"),
    pytest.param("verify_traffic", dict(endpoint="e", model="m", production_endpoint="p", project="p", region="r",
                                        canary_percent=10, steps="10,,100", significance=0.01, keep_previous_s=0,
                                        metrics=None, report_md=None, report_html=None),
                 "steps", id="verify-traffic steps=10,,100"),
    pytest.param("verify_traffic", dict(endpoint="e", model="m", production_endpoint="p", project="p", region="r",
                                        canary_percent=10, steps="", significance=0.01, keep_previous_s=0,
                                        metrics=None, report_md=None, report_html=None, max_latency_ratio=math.nan),
                 "max_latency_ratio", id="verify-traffic max_latency_ratio=nan"),
    pytest.param("deploy", dict(export_uri="gs://b/e", project="p", region="r", machine_type="", accelerator_type="",
                                accelerator_count=0, min_replica_count=1, max_replica_count=1, endpoint_display_name="",
                                model_display_name="", enable_private_service_connect=False, psc_project_allowlist=[],
                                deploy_timeout_s=0, run_id="", vertex_model=None, vertex_endpoint=None),
                 "deploy_timeout_s", id="deploy deploy_timeout_s=0"),
    pytest.param("deploy", dict(export_uri="gs://b/e", project="p", region="r", machine_type="g2-standard-12",
                                accelerator_type="NVIDIA_L4", accelerator_count=3, min_replica_count=1,
                                max_replica_count=1, endpoint_display_name="", model_display_name="",
                                enable_private_service_connect=False, psc_project_allowlist=[], deploy_timeout_s=60,
                                run_id="", vertex_model=None, vertex_endpoint=None),
                 "accelerator_count", id="deploy accelerator_count=3"),
    pytest.param("validate", dict(source="gs://b/e", report_md=None, report_html=None, metrics=None,
                                  accelerator_count=-1),
                 "accelerator_count", id="validate accelerator_count=-1"),
    pytest.param("export_plan", dict(source="gs://b/s", dest="gs://b/d", workers=0),
                 "export_workers", id="export-plan export_workers=0"),
    pytest.param("export_plan", dict(source="gs://b/s", dest="gs://b/d", workers=4, min_worker_size="nan"),
                 "export_min_worker_size", id="export-plan export_min_worker_size=nan"),
    pytest.param("export", dict(source="gs://b/s", dest="gs://b/d", model=None, max_shard_size="9" * 400),
                 "max_shard_size", id="export max_shard_size=9...9"),
]


def _component(name: str) -> Any:
    from tune2serve.components.deploy.component import deploy
    from tune2serve.components.export.component import export
    from tune2serve.components.export.fanout.component import export_plan
    from tune2serve.components.validate.component import validate
    from tune2serve.components.verify_traffic.component import verify_traffic

    return {"verify_traffic": verify_traffic, "deploy": deploy, "validate": validate, "export_plan": export_plan,
            "export": export}[name]


@pytest.mark.parametrize(("component", "kwargs", "parameter"), STEP_CALLS)
def test_a_step_fails_at_once_naming_the_parameter(component: str, kwargs: dict[str, Any], parameter: str,
                                                    no_network: list[object]) -> None:
    with pytest.raises(UsageError, match=rf"parameter {parameter}: "):
        _step(_component(component))(**kwargs)
    assert no_network == []


@pytest.mark.parametrize(("flags", "name"), [
    (["--param", "significance=nan"], "significance"),
    (["--param", "bake_s=-5"], "bake_s"),
    (["--param", "canary_percent=0"], "canary_percent"),
    (["--param", "steps=10,,100"], "steps"),
    (["--param", "keep_previous_s=-1"], "keep_previous_s"),
    (["--param", "max_latency_ratio=inf"], "max_latency_ratio"),
    (["--param", "export_boot_disk_size_gb=0"], "export_boot_disk_size_gb"),
])
def test_submit_refuses_before_sending(flags: list[str], name: str, no_network: list[object],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["submit", "--project", "p", "--region", "r", "--pipeline-root", "gs://b/root", "--template",
                 str(COMPILED), "--param", "source=gs://b/s", "--param", "export_dest=gs://b/d", *flags])
    err = capsys.readouterr().err
    assert code == 2 and f"parameter {name}: " in err and "Traceback" not in err
    assert no_network == []


@settings(max_examples=8, deadline=None, derandomize=True, database=None,  # each reads the compiled YAML
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.sampled_from([".nan", ".inf", "-.inf", "-3", "0", "1.0e+400"]),
       name=st.sampled_from(["bake_s", "significance", "max_error_rate_delta", "max_latency_ratio"]))
def test_a_params_file_with_yaml_nan_is_refused(value: str, name: str, tmp_path_factory: pytest.TempPathFactory,
                                                no_network: list[object], capsys: pytest.CaptureFixture[str]) -> None:
    if value == "0" and name in ("bake_s", "max_error_rate_delta"):
        value = "-0.5"  # 0 means something there
    params = tmp_path_factory.mktemp("params") / "params.yaml"
    params.write_text(f"source: gs://b/s\nexport_dest: gs://b/d\n{name}: {value}\n")
    code = main(["submit", "--project", "p", "--region", "r", "--pipeline-root", "gs://b/root", "--template",
                 str(COMPILED), "--params-file", str(params)])
    err = capsys.readouterr().err
    assert code == 2 and f"parameter {name}: " in err and "Traceback" not in err
    assert no_network == []
