"""The export step: a tuning job's output → a deployable folder (see README.md here)."""

from tune2serve.components.export.export import ExportResult, export_checkpoint

__all__ = ["ExportResult", "export_checkpoint"]
