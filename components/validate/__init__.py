"""The validate step: is a checkpoint folder deployable as Vertex AI custom weights?

``validate_checkpoint(source, ValidateOptions(...)) -> Report`` is the library entry
point; ``component.py`` wraps it for KFP and ``cli/commands/validate.py`` for the
CLI. Policies and finding codes: POLICY.md.
"""

from tune2serve.components.validate.context import ValidateOptions
from tune2serve.components.validate.findings import Finding, Report
from tune2serve.components.validate.validator import validate_checkpoint
from tune2serve.components.vertex.machine_spec import MachineSpec, parse_machine_spec, recommend_machine_spec

__all__ = [
    "Finding",
    "MachineSpec",
    "Report",
    "ValidateOptions",
    "parse_machine_spec",
    "recommend_machine_spec",
    "validate_checkpoint",
]
