"""Monitor: drift against what the serving model learnt from, and the loop's own health."""

import base64
import datetime as dt
import json
from io import BytesIO

import dagster as dg
import duckdb

from flywheel_assets.core import drift, drift_sources, loop_health, model_store, warehouse
from flywheel_assets.core import model as model_lib
from flywheel_assets.defs.partitions import daily_partitions
from flywheel_assets.defs.resources import FlywheelResource

FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=dt.timedelta(hours=30),
                                           warn_window=dt.timedelta(hours=26))


def _served_by(conn: duckdb.DuckDBPyConnection, day: str) -> str | None:
    row = conn.execute("SELECT policy_version FROM raw.impressions WHERE partition_date = ? "
                       "GROUP BY 1 ORDER BY count(*) DESC LIMIT 1", [day]).fetchone()
    return row[0] if row else None


def _png_uri(fig) -> str:
    import matplotlib.pyplot as plt
    buf = BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _compare(conn, reference_sql: str, current_sql: str, columns, thresholds, skipped: list,
             group: str) -> list:
    """One group's column drift, or nothing (noted) when a side has no rows: no logged
    pools, or no exploration to compare reactions on."""
    try:
        return drift.column_drift(conn, reference_sql, current_sql, columns, thresholds)
    except ValueError as exc:
        skipped.append(f"{group}: {str(exc).split(' for SQL')[0]}")
        return []


@dg.asset(group_name="monitor", partitions_def=daily_partitions, pool="duckdb",
          kinds={"duckdb", "evidently"},
          # curated_feedback: the day's bot flags must exist before requests are compared.
          deps=["feedback_events", "curated_feedback", "raw_candidates"],
          freshness_policy=FRESHNESS)
def drift_report(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """The day against the training window of the model that served it, on what the
    serving policy does not choose (so the loop's own choices never read as drift): who
    asks and when (device, country, age band, hour, tenure; every request), what
    retrieval offered (item attributes of the candidate pools; a sample), how people
    react on the random slates of the exploration (graded signal, examined), and the
    model's own view (its scores on pool candidates, its residual on explored
    impressions; samples). The verdict is computed in DuckDB: Jensen–Shannon distance
    for categorical columns, Wasserstein distance over the reference std for numeric
    ones, a column drifts at 0.1, the day drifts when `drift_share_threshold` of the
    columns do. An Evidently `DataDriftPreset` report on a bounded sample is saved as
    HTML under `data/reports/drift/`. `drift_sensor` reads `drift_share` and
    `dataset_drift` from this asset's metadata."""
    s = flywheel.settings
    day = context.partition_key
    with flywheel.warehouse() as conn:
        served_by = _served_by(conn, day)
    if not served_by or not (s.models_dir / served_by / "model.skops").exists():
        return dg.MaterializeResult(metadata={
            "drift_share": 0.0, "dataset_drift": False, "served_by": served_by or "none",
            "reference": "none: the day was not served by a trained model"})
    card = model_store.load_card(s.models_dir, served_by)
    first, last = str(card["window_start"])[:10], str(card["window_end"])[:10]
    thresholds = drift.DriftThresholds(drift_share=s.drift_share_threshold)
    src, skipped = drift_sources, []
    with flywheel.warehouse() as conn:
        drifts = _compare(conn, src.requests_sql(first, last), src.requests_sql(day, day),
                          src.REQUEST_COLUMNS, thresholds, skipped, "requests")
        drifts += _compare(conn, src.pools_sql(first, last, s.drift_pool_sample_rows),
                           src.pools_sql(day, day, s.drift_pool_sample_rows),
                           src.POOL_COLUMNS, thresholds, skipped, "candidate pools")
        drifts += _compare(conn, src.explored_sql(first, last), src.explored_sql(day, day),
                           src.SIGNAL_COLUMNS, thresholds, skipped, "explored slates")
        pools = [drift.sample_frame(conn, src.pools_sql(a, b, s.drift_sample_rows, True),
                                    s.drift_sample_rows) for a, b in ((first, last), (day, day))]
        trained_for = str(card["partition_date"])[:10]
        explored = [drift.sample_frame(conn, sql, s.drift_sample_rows) for sql in (
            src.explored_sql(trained_for, trained_for, True, unseen_by=trained_for),
            src.explored_sql(day, day, True))]
    model = model_store.load_model(s.models_dir, served_by)
    for frame in pools:
        if len(frame):
            frame["model_score"] = model_lib.score(model, frame)
    for frame in explored:
        if len(frame):
            frame["model_residual"] = frame["grade_value"] - model_lib.score(model, frame)
    scratch = duckdb.connect()
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
    verdict = drift.drift_verdict(drifts, thresholds)
    html = s.reports_dir / "drift" / f"{day}.html"
    html.parent.mkdir(parents=True, exist_ok=True)
    evidently = {}
    if all(len(f) for f in pools):
        shown = [*src.REQUEST_COLUMNS, *src.POOL_COLUMNS, src.MODEL_COLUMNS[0]]
        names = [c.name for c in shown]
        evidently = drift.evidently_report(pools[0][names], pools[1][names], shown, html)
    summary = verdict.as_dict()
    with flywheel.warehouse() as conn, warehouse.transaction(conn):
        conn.execute("DELETE FROM monitor.drift_reports WHERE partition_date = ?", [day])
        conn.execute("INSERT INTO monitor.drift_reports VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                     [day, served_by, card["partition_date"], verdict.drift_share,
                      verdict.dataset_drift, json.dumps(summary["columns"]),
                      str(html) if evidently else None, dt.datetime.now(dt.timezone.utc)])
    top = verdict.top(6)
    table = ["| column | statistic | value | threshold | drifted |", "|---|---|---|---|---|"]
    table += [f"| {d.column} | {d.statistic} | {d.value:.3f} | {d.threshold:.2f} | "
              f"{'yes' if d.drifted else 'no'} |" for d in top]
    return dg.MaterializeResult(metadata={
        "drift_share": round(verdict.drift_share, 4),
        "dataset_drift": verdict.dataset_drift,
        "drift_share_threshold": s.drift_share_threshold,
        "drifted_columns": ", ".join(d.column for d in verdict.drifts if d.drifted) or "none",
        "columns_compared": len(verdict.drifts),
        "top_drifted_columns": dg.MetadataValue.md("\n".join(table)),
        "served_by": served_by, "reference_window": f"{first} .. {last}",
        "not_compared": dg.MetadataValue.json(skipped),
        "evidently_drift_share": evidently.get("evidently_drift_share"),
        "evidently_sample_rows": s.drift_sample_rows,
        **({"report": dg.MetadataValue.path(str(html))} if evidently else {})})


@dg.asset(group_name="monitor", partitions_def=daily_partitions, pool="duckdb",
          kinds={"duckdb"}, deps=["champion_model", "model_evaluation", drift_report],
          freshness_policy=FRESHNESS)
def flywheel_health(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """The three preconditions of a working flywheel, measured every rotation. Signal
    valid: the model trained on the day's signal beats the no-learning (popularity)
    baseline on held-out data. Loop closed: the champion in service traces back to the
    partitions it learnt from (each landed, its training set present). Fast: hours from
    the newest day it learnt from landing to that champion being in service. Plus the
    quality trend of the model in service over the last rotations (its off-policy value
    on each day's logs): improving, saturating or degrading. Chart and verdict in the
    metadata; a row per day in `monitor.flywheel_health`."""
    s = flywheel.settings
    day = context.partition_key
    pointer = model_store.read_champion(s.models_dir)
    card = model_store.load_card(s.models_dir, pointer["version"]) if pointer else None
    with flywheel.warehouse() as conn:
        evaluation = json.loads(conn.execute(
            "SELECT metrics FROM ml.model_evaluations WHERE partition_date = ?", [day]).fetchone()[0])
        landed = {str(r[0]) for r in conn.execute(
            "SELECT DISTINCT partition_date FROM raw.landing_files WHERE stream = 'impressions' "
            "AND rows_read > 0").fetchall()}
        trained = {str(r[0]) for r in conn.execute(
            "SELECT DISTINCT partition_date FROM ml.training_set").fetchall()}
        series = loop_health.in_service_series(conn, day, 14)
    valid = loop_health.signal_valid(evaluation)
    closed = loop_health.loop_closed(card, landed, trained)
    landed_at = None
    if card:
        marker = s.landing_dir / "impressions" / f"date={str(card['window_end'])[:10]}" / "_SUCCESS"
        landed_at = marker.stat().st_mtime if marker.exists() else None
    promoted_at = (dt.datetime.fromisoformat(pointer["promoted_at"]).timestamp()
                   if pointer else None)
    hours = loop_health.event_to_champion_hours(landed_at, promoted_at)
    trend = loop_health.quality_trend([p["value"] for p in series])
    verdict = ("healthy" if valid["ok"] and closed["ok"] and trend["trend"] != "degrading"
               else "attention")
    details = {"signal_valid": valid, "loop_closed": closed, "event_to_champion_hours": hours,
               "quality_trend": trend, "in_service": series}
    with flywheel.warehouse() as conn, warehouse.transaction(conn):
        conn.execute("DELETE FROM monitor.flywheel_health WHERE partition_date = ?", [day])
        conn.execute("INSERT INTO monitor.flywheel_health VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [day, valid["ok"], closed["ok"], hours, trend["trend"],
                      json.dumps(details, default=str), dt.datetime.now(dt.timezone.utc)])
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 2.2), dpi=80)
    ax.plot([p["date"][5:] for p in series], [p["value"] for p in series], marker="o")
    ax.set_title(f"in-service model, off-policy DCG@10: {trend['trend']}", fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    text = (f"**{verdict}** — signal valid: {'yes' if valid['ok'] else 'NO'} "
            f"(holdout NDCG@10 {valid['candidate_holdout_ndcg_at_10']:.3f} vs popularity "
            f"{valid['popularity_holdout_ndcg_at_10']:.3f}); loop closed: "
            f"{'yes' if closed['ok'] else 'NO'}; event → champion: "
            + (f"{hours:.2f} h" if hours is not None else "n/a")
            + f"; quality: {trend['trend']}\n\n![trend]({_png_uri(fig)})")
    return dg.MaterializeResult(metadata={
        "verdict": verdict, "signal_valid": valid["ok"], "loop_closed": closed["ok"],
        "event_to_champion_hours": hours, "quality_trend": trend["trend"],
        "summary": dg.MetadataValue.md(text),
        "details": dg.MetadataValue.json(json.loads(json.dumps(details, default=str)))})
