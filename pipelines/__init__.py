"""The pipeline DAG, the CLI, the local stack and the demo models."""
