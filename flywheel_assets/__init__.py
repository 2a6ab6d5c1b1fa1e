"""Flywheel: a data flywheel for ML models on Dagster software-defined assets."""
