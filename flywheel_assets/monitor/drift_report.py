"""The day's drift report: the day against the training window of the model that
served it, on what the serving policy does not choose (so the loop's own choices never
read as drift). Statistics in `drift`, the compared rows in `drift_sources`; this
module reads both sides, adds the model's own view (scores and residuals on samples),
writes the verdict to `monitor.drift_reports` and an Evidently HTML report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import duckdb

from flywheel_assets import warehouse
from flywheel_assets.monitor import drift
from flywheel_assets.monitor import drift_sources as src
from flywheel_assets.reporting import markdown_table
from flywheel_assets.settings import Settings
from flywheel_assets.train import model as model_lib
from flywheel_assets.train import model_store


@dataclass
class DayDrift:
    served_by: str | None
    verdict: drift.DriftVerdict | None = None
    reference_window: str | None = None
    not_compared: list[str] = field(default_factory=list)
    evidently: dict = field(default_factory=dict)
    html: str | None = None

    def top_markdown(self, n: int = 6) -> str:
        return markdown_table(
            ["column", "statistic", "value", "threshold", "drifted"],
            [(d.column, d.statistic, f"{d.value:.3f}", f"{d.threshold:.2f}",
              "yes" if d.drifted else "no") for d in self.verdict.top(n)])


def served_by(conn: duckdb.DuckDBPyConnection, day: str) -> str | None:
    """The policy version that served most of the day's impressions."""
    row = conn.execute("SELECT policy_version FROM raw.impressions WHERE partition_date = ? "
                       "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1", [day]).fetchone()
    return row[0] if row else None


def _compare(conn, reference_sql: str, current_sql: str, columns, thresholds, skipped: list,
             group: str) -> list:
    """One group's column drift, or nothing (noted) when a side has no rows: no logged
    pools, or no exploration to compare reactions on."""
    try:
        return drift.column_drift(conn, reference_sql, current_sql, columns, thresholds)
    except ValueError as exc:
        skipped.append(f"{group}: {str(exc).split(' for SQL')[0]}")
        return []


def _model_view(model, pools: list, explored: list, thresholds, skipped: list) -> list:
    """The serving model's scores on pool candidates and its residual on explored
    impressions, reference vs current (samples)."""
    for frame in pools:
        if len(frame):
            frame["model_score"] = model_lib.score(model, frame)
    for frame in explored:
        if len(frame):
            frame["model_residual"] = frame["grade_value"] - model_lib.score(model, frame)
    drifts, scratch = [], duckdb.connect()
    try:
        for name, frames, column in (("score", pools, "model_score"),
                                     ("residual", explored, "model_residual")):
            if not all(len(f) for f in frames):
                skipped.append(f"model {name}: a side has no rows")
                continue
            scratch.register(f"ref_{name}", frames[0][[column]])
            scratch.register(f"cur_{name}", frames[1][[column]])
            drifts += _compare(scratch, f"SELECT * FROM ref_{name}",
                               f"SELECT * FROM cur_{name}",
                               [c for c in src.MODEL_COLUMNS if c.name == column], thresholds,
                               skipped, f"model {name}")
    finally:
        scratch.close()
    return drifts


def report_day(connect, settings: Settings, day: str) -> DayDrift:
    """Compare the day with the serving model's training window (DuckDB verdict on full
    data, samples for the model's view and the Evidently report) and record it."""
    d, models_dir = settings.drift, settings.models_dir
    with connect() as conn:
        policy = served_by(conn, day)
    if not policy or not (models_dir / policy / "model.skops").exists():
        return DayDrift(served_by=policy)
    card = model_store.load_card(models_dir, policy)
    first, last = str(card["window_start"])[:10], str(card["window_end"])[:10]
    thresholds = drift.DriftThresholds(drift_share=d.share_threshold)
    skipped: list[str] = []
    with connect() as conn:
        drifts = _compare(conn, src.requests_sql(first, last), src.requests_sql(day, day),
                          src.REQUEST_COLUMNS, thresholds, skipped, "requests")
        drifts += _compare(conn, src.pools_sql(first, last, d.pool_sample_rows),
                           src.pools_sql(day, day, d.pool_sample_rows),
                           src.POOL_COLUMNS, thresholds, skipped, "candidate pools")
        drifts += _compare(conn, src.explored_sql(first, last), src.explored_sql(day, day),
                           src.SIGNAL_COLUMNS, thresholds, skipped, "explored slates")
        pools = [drift.sample_frame(conn, src.pools_sql(a, b, d.sample_rows, True),
                                    d.sample_rows) for a, b in ((first, last), (day, day))]
        trained_for = str(card["partition_date"])[:10]
        explored = [drift.sample_frame(conn, sql, d.sample_rows) for sql in (
            src.explored_sql(trained_for, trained_for, True, unseen_by=trained_for),
            src.explored_sql(day, day, True))]
    model = model_store.load_model(models_dir, policy)
    drifts += _model_view(model, pools, explored, thresholds, skipped)
    verdict = drift.drift_verdict(drifts, thresholds)
    html = settings.reports_dir / "drift" / f"{day}.html"
    html.parent.mkdir(parents=True, exist_ok=True)
    evidently = {}
    if all(len(f) for f in pools):
        shown = [*src.REQUEST_COLUMNS, *src.POOL_COLUMNS, src.MODEL_COLUMNS[0]]
        names = [c.name for c in shown]
        evidently = drift.evidently_report(pools[0][names], pools[1][names], shown, html)
    with connect() as conn:
        warehouse.replace_rows(conn, "monitor.drift_reports", {"partition_date": day}, {
            "partition_date": day, "served_by": policy,
            "reference_partition": card["partition_date"], "drift_share": verdict.drift_share,
            "dataset_drift": verdict.dataset_drift,
            "columns": json.dumps(verdict.as_dict()["columns"]),
            "report_path": str(html) if evidently else None, "computed_at": warehouse.now()})
    return DayDrift(policy, verdict, f"{first} .. {last}", skipped, evidently,
                    str(html) if evidently else None)
