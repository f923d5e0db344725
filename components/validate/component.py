"""The ``validate`` KFP component: a thin wrapper over ``validate_checkpoint``.

Never fails on a bad checkpoint: it reports ``passed`` for ``dsl.If`` and writes the
Markdown and HTML reports and the Metrics either way.
"""

from typing import NamedTuple

from kfp.dsl import HTML, Markdown, Metrics, Output

from tune2serve.components.step_component import step_component


@step_component
def validate(
    source: str,
    report_md: Output[Markdown],
    report_html: Output[HTML],
    metrics: Output[Metrics],
    strict: bool = False,
    machine_type: str = "",
    accelerator_type: str = "",
    accelerator_count: int = 0,
    verify_checksums: bool = False,
    base_model: str = "",
) -> NamedTuple("ValidateOutputs", [("passed", bool), ("summary", str)]):  # type: ignore[valid-type]
    """Checks that a checkpoint folder is deployable as Vertex AI custom weights.

    Args:
        source: the checkpoint folder, gs://bucket/prefix (or a local path).
        strict: treat warnings (for example a size not in the supported list) as errors.
        machine_type: the machine type to check memory against; "" for none.
        accelerator_type: e.g. NVIDIA_L4; "" for none (set with machine_type and count).
        accelerator_count: 1, 2, 4 or 8; 0 for none.
        verify_checksums: hash every file against manifest.json (reads all the data).
        base_model: a base model folder to compare tensor names and shapes with; "" for none.

    Returns:
        passed: True when no finding is an error. summary: the report's summary as JSON.
    """
    import json
    from collections import namedtuple

    from tune2serve.components.validate import artifacts

    options = artifacts.options_from_parameters(strict, machine_type, accelerator_type, accelerator_count,
                                                verify_checksums, base_model)
    report = artifacts.validate_for_pipeline(source, options)
    artifacts.write_report_files(report, report_md.path, report_html.path)
    for name, value in artifacts.report_metrics(report).items():
        metrics.log_metric(name, value)
    outputs = namedtuple("ValidateOutputs", ["passed", "summary"])
    return outputs(report.ok, json.dumps(report.to_dict()["summary"], default=str))
