"""Prefect orchestration: runs the DVC stages in DVC's order and publishes artifacts."""
