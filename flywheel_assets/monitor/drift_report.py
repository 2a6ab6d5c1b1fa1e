"""The day's drift report: the day against the training window of the model that
served it, on what the serving policy does not choose (so the loop's own choices never
read as drift). Statistics in `drift`, the compared rows in `drift_sources`; this
module reads both sides, adds the model's own view (scores and residuals on samples),
writes the verdict to `monitor.drift_reports` and an Evidently HTML report."""

from __future__ import annotations

import datetime as dt
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
                       "GROUP BY 1 ORDER BY count(*) DESC, policy_version NULLS LAST LIMIT 1",
                       [day]).fetchone()
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
    try:
        scores = [model_lib.score(model, f) if len(f) else None for f in pools]
        residuals = [f["grade_value"] - model_lib.score(model, f) if len(f) else None
                     for f in explored]
    except KeyError as exc:
        # Never fail the rotation over the model's own view: say what is missing.
        skipped.append(f"model view: {exc.args[0]}")
        return []
    for frame, values in zip(pools, scores):
        if values is not None:
            frame["model_score"] = values
    for frame, values in zip(explored, residuals):
        if values is not None:
            frame["model_residual"] = values
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


def reference_days(conn: duckdb.DuckDBPyConnection, day: str, policy: str | None,
                   max_days: int) -> list[str]:
    """The consecutive days just before ``day`` that the same policy served (at most
    ``max_days``): the reference when the policy is not a model of ours (the product's
    own policy, or no declared version at all)."""
    first = (dt.date.fromisoformat(day) - dt.timedelta(days=max_days)).isoformat()
    # The same rule as served_by: the version of most impressions, NULL counted too.
    served = dict(conn.execute("""
        SELECT day, policy_version FROM (
            SELECT partition_date::VARCHAR AS day, policy_version,
                   row_number() OVER (PARTITION BY partition_date ORDER BY count(*) DESC,
                                      policy_version NULLS LAST) AS rank
            FROM raw.impressions WHERE partition_date >= ? AND partition_date < ?
            GROUP BY partition_date, policy_version) WHERE rank = 1""", [first, day]).fetchall())
    out, d = [], dt.date.fromisoformat(day)
    for _ in range(max_days):
        d -= dt.timedelta(days=1)
        if d.isoformat() not in served or served[d.isoformat()] != policy:
            break
        out.append(d.isoformat())
    return sorted(out)


def _available(conn, sqls: list[str], columns: list, skipped: list, group: str) -> list:
    """The columns with a value on either side; the others are noted as not logged."""
    counts = [conn.execute(f"SELECT {', '.join(f'count({drift._ident(c.name)})' for c in columns)} "
                           f"FROM ({sql})").fetchone() for sql in sqls]
    kept = [c for i, c in enumerate(columns) if any(n[i] for n in counts)]
    missing = [c.name for c in columns if c not in kept]
    if missing:
        skipped.append(f"{group}: not logged: {', '.join(missing)}")
    return kept


def report_day(connect, settings: Settings, day: str) -> DayDrift:
    """Compare the day with its reference (DuckDB verdict on full data, samples for the
    model's view and the Evidently report) and record it. The reference is the
    training window of the model of ours that served the day; when the product's own
    policy served it, the consecutive days before it that the same policy served."""
    d, models_dir = settings.drift, settings.models_dir
    random_policies = settings.curation.random_policies
    with connect() as conn:
        policy = served_by(conn, day)
        ours = bool(policy) and (models_dir / policy / "model.skops").exists()
        card = model_store.load_card(models_dir, policy) if ours else None
        days = ([] if ours else
                reference_days(conn, day, policy, settings.training.window_days))
    if ours:
        first, last = str(card["window_start"])[:10], str(card["window_end"])[:10]
    elif days:
        first, last = days[0], days[-1]
    else:
        why = (f"no earlier day served by {policy or 'the same undeclared policy'} to compare "
               "with (the first day of a policy has no reference)")
        with connect() as conn:
            _record(conn, day, policy, None, None, None, {"not_compared": [why]})
        return DayDrift(served_by=policy, not_compared=[why])
    thresholds = drift.DriftThresholds(drift_share=d.share_threshold)
    skipped: list[str] = []
    groups = [("requests", src.requests_sql(first, last), src.requests_sql(day, day),
               src.REQUEST_COLUMNS),
              ("candidate pools", src.pools_sql(first, last, d.pool_sample_rows),
               src.pools_sql(day, day, d.pool_sample_rows), src.POOL_COLUMNS),
              ("explored slates",
               src.explored_sql(first, last, random_policies=random_policies),
               src.explored_sql(day, day, random_policies=random_policies), src.SIGNAL_COLUMNS)]
    drifts, shown = [], []
    with connect() as conn:
        for group, ref_sql, cur_sql, columns in groups:
            columns = _available(conn, [ref_sql, cur_sql], columns, skipped, group)
            if columns:
                drifts += _compare(conn, ref_sql, cur_sql, columns, thresholds, skipped, group)
                shown += [c for c in columns if group != "explored slates"]
        pools = [drift.sample_frame(conn, src.pools_sql(a, b, d.sample_rows, True),
                                    d.sample_rows) for a, b in ((first, last), (day, day))]
        explored = []
        if ours:
            trained_for = str(card["partition_date"])[:10]
            explored = [drift.sample_frame(conn, sql, d.sample_rows) for sql in (
                src.explored_sql(trained_for, trained_for, True, unseen_by=trained_for,
                                 random_policies=random_policies),
                src.explored_sql(day, day, True, random_policies=random_policies))]
    if ours:
        drifts += _model_view(model_store.load_model(models_dir, policy), pools, explored,
                              thresholds, skipped)
        if all("model_score" in f for f in pools):
            shown.append(src.MODEL_COLUMNS[0])
    else:
        skipped.append(f"model view: {policy or 'an undeclared policy'} is not a model of ours")
    verdict = drift.drift_verdict(drifts, thresholds)
    html = settings.reports_dir / "drift" / f"{day}.html"
    html.parent.mkdir(parents=True, exist_ok=True)
    evidently = {}
    if all(len(f) for f in pools) and shown:
        names = [c.name for c in shown if c.name in pools[0]]
        evidently = drift.evidently_report(pools[0][names], pools[1][names],
                                           [c for c in shown if c.name in names], html)
    reference = card["partition_date"] if ours else first
    with connect() as conn:
        _record(conn, day, policy, reference, verdict, str(html) if evidently else None,
                {"columns": verdict.as_dict()["columns"], "not_compared": skipped})
    return DayDrift(policy, verdict, f"{first} .. {last}" + ("" if ours else
                    f" (days served by {policy or 'the same undeclared policy'})"), skipped,
                    evidently, str(html) if evidently else None)


def _record(conn, day: str, policy: str | None, reference, verdict, html: str | None,
            details: dict) -> None:
    """The day's row of `monitor.drift_reports` (a day with no reference says why)."""
    warehouse.replace_rows(conn, "monitor.drift_reports", {"partition_date": day}, {
        "partition_date": day, "served_by": policy, "reference_partition": reference,
        "drift_share": verdict.drift_share if verdict else None,
        "dataset_drift": verdict.dataset_drift if verdict else False,
        "columns": json.dumps(details["columns"] if "columns" in details else details),
        "report_path": html, "computed_at": warehouse.now()})
