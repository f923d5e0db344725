"""The KFP component compiles, and its python_func writes the artifacts without raising
on a failing checkpoint. (No `from __future__ import annotations`: KFP reads the
pipeline function's annotations as types.)"""


import json
from pathlib import Path

import yaml
from kfp import compiler, dsl
from kfp.dsl import HTML, Markdown, Metrics

from tune2serve.components.validate.component import validate
from tests.fixtures.broken_models import make_broken, variant


def test_compiles_in_a_pipeline_gated_on_passed(tmp_path: Path) -> None:
    @dsl.pipeline(name="validate-gate")
    def gate(source: str) -> None:
        checked = validate(source=source, strict=True)
        with dsl.If(checked.outputs["passed"] == True):  # noqa: E712 (KFP condition syntax)
            validate(source=source)

    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(gate, str(out))
    spec = yaml.safe_load(out.read_text())
    comp = spec["components"]["comp-validate"]
    assert set(comp["outputDefinitions"]["artifacts"]) == {"report_md", "report_html", "metrics"}
    assert comp["outputDefinitions"]["parameters"]["passed"]["parameterType"] == "BOOLEAN"
    assert set(comp["inputDefinitions"]["parameters"]) == {
        "source", "strict", "machine_type", "accelerator_type", "accelerator_count", "verify_checksums", "base_model"}


def _artifacts(tmp_path: Path) -> tuple[Markdown, HTML, Metrics]:
    md = Markdown(uri=str(tmp_path / "md"))
    md.path = str(tmp_path / "report.md")
    page = HTML(uri=str(tmp_path / "html"))
    page.path = str(tmp_path / "report.html")
    metrics = Metrics(uri=str(tmp_path / "metrics"))
    return md, page, metrics


def test_python_func_on_a_good_model(tiny_qwen_sharded: Path, tmp_path: Path) -> None:
    md, page, metrics = _artifacts(tmp_path)
    passed, summary = validate.python_func(source=str(tiny_qwen_sharded), report_md=md, report_html=page,
                                           metrics=metrics)
    assert passed is True
    assert json.loads(summary)["shards"] == 5
    assert "DEPLOYABLE" in Path(md.path).read_text()
    assert '<header id="verdict" class="banner pass" data-ok="true">' in Path(page.path).read_text()
    assert metrics.metadata["shards"] == 5.0 and metrics.metadata["errors"] == 0.0
    assert metrics.metadata["parameters"] > 0


def test_python_func_does_not_raise_on_a_broken_model(tiny_llama: Path, tmp_path: Path) -> None:
    folder = make_broken(tiny_llama, tmp_path / "b", variant("gptq-config"))
    md, page, metrics = _artifacts(tmp_path)
    passed, _summary = validate.python_func(source=str(folder), report_md=md, report_html=page, metrics=metrics,
                                            strict=False, machine_type="g2-standard-12",
                                            accelerator_type="NVIDIA_L4", accelerator_count=1)
    assert passed is False
    assert "quantized-user" in Path(md.path).read_text()
    assert metrics.metadata["errors"] >= 1.0


def test_python_func_unreadable_source_is_a_failing_report(tmp_path: Path) -> None:
    md, page, metrics = _artifacts(tmp_path)
    passed, _ = validate.python_func(source=str(tmp_path / "nope"), report_md=md, report_html=page, metrics=metrics)
    assert passed is False
    assert "source-unreadable" in Path(page.path).read_text()
