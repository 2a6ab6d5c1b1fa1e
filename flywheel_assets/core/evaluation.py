"""Candidate vs champion on the same temporal holdout."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from flywheel_assets.core import metrics
from flywheel_assets.core import model as model_lib


def compare(holdout: pd.DataFrame, models: dict[str, object]) -> dict[str, dict[str, float]]:
    """Holdout metrics of each named model (pipelines), on identical rows."""
    return {name: metrics.ranking_report(holdout, model_lib.score(pipe, holdout))
            for name, pipe in models.items()}


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    names = list(results)
    keys = list(next(iter(results.values())))
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{results[n][k]:.4f}" for n in names) + " |")
    return "\n".join(lines)


def write_report(reports_dir: Path, partition_date: str, record: dict) -> Path:
    out = reports_dir / "evaluation" / f"{partition_date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str))
    return out
