"""The day's drift report: the day against the days just before it, on what the
serving policy does not choose (so the loop's own choices never read as drift).
Statistics in `drift`, the compared rows in `drift_sources`; this module reads both
sides, calibrates each column's threshold on the reference's own normal days, adds the
model's own view (scores and residuals on samples; reported, never a trigger), decides
whether the drift asks for a retrain (large, or persisting), writes the verdict to
`monitor.drift_reports` and an Evidently HTML report."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass, field

import duckdb
import numpy as np

from flywheel_assets import warehouse
from flywheel_assets.monitor import drift
from flywheel_assets.monitor import drift_sources as src
from flywheel_assets.reporting import markdown_table
from flywheel_assets.settings import Settings
from flywheel_assets.train import features as feats
from flywheel_assets.train import model as model_lib
from flywheel_assets.train import model_store


@dataclass
class DayDrift:
    served_by: str | None
    # dataset_drift: a retrain is asked for (drifted, and large or persistent).
    verdict: drift.DriftVerdict | None = None
    reference_window: str | None = None
    not_compared: list[str] = field(default_factory=list)
    evidently: dict = field(default_factory=dict)
    html: str | None = None
    drifted: bool = False      # a data column past its threshold today
    large: bool = False        # one past `drift.large_factor` × its threshold
    persistent: bool = False   # drifted on `drift.persist_days` days in a row
    calibrated: bool = False   # thresholds from this reference's own normal days
    champion_age_days: int | None = None
    drifted_columns: list[str] = field(default_factory=list)  # data columns only

    def top_markdown(self, n: int = 8) -> str:
        return markdown_table(
            ["column", "statistic", "value", "threshold", "drifted", "can trigger"],
            [(d.column, d.statistic, f"{d.value:.3f}", f"{d.threshold:.3f}",
              "yes" if d.drifted else "no",
              "no (reported)" if d.column in INFORMATIONAL else "yes")
             for d in self.verdict.top(n)])


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


def reference_window(conn: duckdb.DuckDBPyConnection, day: str, max_days: int) -> list[str]:
    """The reference: the normal days with feedback among the ``max_days`` before
    ``day``, from the last day whose drift started a retrain (that day included: a
    change that was acted on is the new normal, not drift again every day until it
    leaves the window). A day that drifted without a retrain is left out: it is not
    normal, and it would teach the thresholds that drift is."""
    first = (dt.date.fromisoformat(day) - dt.timedelta(days=max_days)).isoformat()
    since = last_retrain(conn, day)
    if since is not None:
        # From the retrain's day on: the change acted on is the new normal (a day after
        # it is never left without a reference, so nothing lands unseen).
        first = max(first, since)
    return [str(r[0]) for r in conn.execute("""
        SELECT DISTINCT f.partition_date FROM curated.feedback_events f
        WHERE f.partition_date >= ? AND f.partition_date < ? AND NOT EXISTS (
            SELECT 1 FROM monitor.drift_reports r WHERE r.partition_date = f.partition_date
            AND NOT r.dataset_drift
            AND coalesce(json_extract(r.columns, '$.drifted')::BOOLEAN, FALSE))
        ORDER BY 1""", [first, day]).fetchall()]


def last_retrain(conn: duckdb.DuckDBPyConnection, day: str) -> str | None:
    """The last day before ``day`` whose drift report asked for a retrain."""
    since = conn.execute("SELECT max(partition_date) FROM monitor.drift_reports "
                         "WHERE partition_date < ? AND dataset_drift", [day]).fetchone()[0]
    return None if since is None else since.isoformat()


def _details(text: str | None) -> dict:
    """A report's details (a report written before the verdict had parts: none)."""
    value = json.loads(text) if text else {}
    return value if isinstance(value, dict) else {}


def _available(conn, sqls: list[str], columns: list, skipped: list, group: str) -> list:
    """The columns with a value on either side; the others are noted as not logged."""
    counts = [conn.execute(f"SELECT {', '.join(f'count({drift._ident(c.name)})' for c in columns)} "
                           f"FROM ({sql})").fetchone() for sql in sqls]
    kept = [c for i, c in enumerate(columns) if any(n[i] for n in counts)]
    missing = [c.name for c in columns if c not in kept]
    if missing:
        skipped.append(f"{group}: not logged: {', '.join(missing)}")
    return kept


def calibrate(conn, groups: list, days: list[str]) -> dict[str, float]:
    """Each column's normal variation: the largest statistic of one reference day against
    the other reference days (leave one out), so that a column's threshold reflects its
    own sampling noise and day-to-day movement, not a constant.

    Each reference day of a view is read once, with its day, into a temporary table, and
    every leave-one-out side is read from it: the sources run once per day, not once per
    held-out day for every other day. A view sampled to ``sample_rows`` (the candidate
    pools) is read as its comparison reads one day (a sample of ``sample_rows``); the
    held-out day is that sample, and the other days' side is sampled from theirs to
    ``sample_rows``, as its comparison is."""
    noise: dict[str, float] = {}
    for group, sql_of, columns, sample_rows in groups:
        table = "_drift_calibration"
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS " + " UNION ALL ".join(
            f"({sql_of([d], day_column=True)})" for d in days))
        try:
            def side(condition: str) -> str:
                rows = f"SELECT * EXCLUDE (_day) FROM {table} WHERE {condition}"
                return (rows if sample_rows is None else f"SELECT * FROM ({rows}) USING SAMPLE "
                        f"reservoir({int(sample_rows)} ROWS) REPEATABLE (7)")

            for held_out in days:
                for d in _compare(conn, side(f"_day <> DATE '{held_out}'"),
                                  side(f"_day = DATE '{held_out}'"), columns,
                                  drift.DriftThresholds(), [], group):
                    if np.isfinite(d.value):
                        noise[d.column] = max(noise.get(d.column, 0.0), d.value)
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    return noise


def thresholds_for(conn, day: str, noise: dict[str, float] | None, d) -> dict[str, float]:
    """Per-column thresholds: ``noise_multiplier`` × the normal variation (at least
    ``min_threshold``) when the reference can calibrate; else the latest calibrated
    thresholds of an earlier report; else none (the fixed 0.1 applies)."""
    if noise is not None:
        return {c: max(d.min_threshold, d.noise_multiplier * v) for c, v in noise.items()}
    row = conn.execute("SELECT columns FROM monitor.drift_reports WHERE partition_date < ? "
                       "AND json_extract(columns, '$.calibrated')::BOOLEAN "
                       "ORDER BY partition_date DESC LIMIT 1", [day]).fetchone()
    if row is None:
        return {}
    return {c["column"]: c["threshold"] for c in _details(row[0]).get("columns", [])
            if c["column"] not in MODEL_COLUMNS}


def _persisting(conn, day: str, days: int, drifted: set[str]) -> set[str]:
    """The data columns of ``drifted`` that also drifted (on calibrated thresholds, this
    reference's or an earlier one's, without a retrain) on each of the ``days`` - 1
    days before ``day``: the same column, day after day, not any column on each day."""
    if days <= 1:
        return set(drifted)
    d = dt.date.fromisoformat(day)
    wanted = [(d - dt.timedelta(days=i)).isoformat() for i in range(1, days)]
    rows = dict(conn.execute(
        f"SELECT partition_date::VARCHAR, columns FROM monitor.drift_reports WHERE "
        f"partition_date IN ({', '.join('?' for _ in wanted)}) AND NOT dataset_drift",
        wanted).fetchall())
    out = set(drifted)
    for w in wanted:
        details = _details(rows.get(w))
        if not (details.get("calibrated") or details.get("judged")):
            return set()
        out &= set(details.get("drifted_columns") or ())
    return out


MODEL_COLUMNS = {c.name for c in src.MODEL_COLUMNS}
# Reported, never a trigger: the model's own view, and the candidate pools (retrieval
# follows popularity, which the product's own plays move).
INFORMATIONAL = MODEL_COLUMNS | {c.name for c in src.POOL_COLUMNS}


def report_day(connect, settings: Settings, day: str) -> DayDrift:
    """Compare the day with the days just before it (DuckDB verdict on full data, with
    per-column thresholds calibrated on those days; samples for the model's view and
    the Evidently report) and record it. A retrain is asked for (``dataset_drift``)
    when a data column drifts and the drift is large or persists."""
    d, models = settings.drift, settings.models
    random_policies = settings.curation.random_policies
    with connect() as conn:
        policy = served_by(conn, day)
        ours = bool(policy) and model_store.has_model(models, policy)
        card = model_store.load_card(models, policy) if ours else None
        days = reference_window(conn, day, d.reference_days)
    champion_age = ((dt.date.fromisoformat(day)
                     - dt.date.fromisoformat(str(card["partition_date"])[:10])).days
                    if ours else None)
    if not days:
        why = "no earlier day with feedback to compare with (the first day has no reference)"
        with connect() as conn:
            since = last_retrain(conn, day)
        if since is not None:
            why = (f"the reference restarts after the retrain drift asked for on {since}: no "
                   "normal day since")
        with connect() as conn:
            _record(conn, day, policy, None, None, None, {"not_compared": [why]})
        return DayDrift(served_by=policy, not_compared=[why])
    skipped: list[str] = []
    # Each view: its SQL for some days, its columns, the rows a side is sampled to.
    groups = [("requests", src.requests_sql, src.REQUEST_COLUMNS, None),
              ("catalogue", src.catalogue_sql, src.CATALOGUE_COLUMNS, None),
              ("candidate pools", lambda ds, **kw: src.pools_sql(ds, d.pool_sample_rows, **kw),
               src.POOL_COLUMNS, d.pool_sample_rows),
              ("explored slates", lambda ds, **kw: src.explored_sql(
                  ds, random_policies=random_policies, **kw), src.SIGNAL_COLUMNS, None)]
    drifts, shown = [], []
    with connect() as conn:
        kept = []
        for group, sql_of, columns, sample_rows in groups:
            columns = _available(conn, [sql_of(days), sql_of([day])], columns, skipped, group)
            if columns:
                kept.append((group, sql_of, columns, sample_rows))
                drifts += _compare(conn, sql_of(days), sql_of([day]), columns,
                                   drift.DriftThresholds(), skipped, group)
                shown += [c for c in columns if group in ("requests", "candidate pools")]
        calibrated = len(days) >= d.min_reference_days
        limits = thresholds_for(conn, day, calibrate(conn, kept, days) if calibrated else None, d)
        # Thresholds a calibration set (this reference's, or the last one's) can
        # persist; fixed ones (no calibration yet) cannot.
        judged = calibrated or bool(limits)
        drifts = [dataclasses.replace(c, threshold=limits[c.column],
                                      drifted=bool(c.value >= limits[c.column]))
                  if c.column in limits else c for c in drifts]
        pools = [drift.sample_frame(conn, src.pools_sql(ds, d.sample_rows, True), d.sample_rows)
                 for ds in (days, [day])]
        explored = []
        if ours:
            trained_for = str(card["partition_date"])[:10]
            explored = [drift.sample_frame(conn, sql, d.sample_rows) for sql in (
                src.explored_sql([trained_for], True, unseen_by=trained_for,
                                 random_policies=random_policies),
                src.explored_sql([day], True, random_policies=random_policies))]
        if ours:
            # A model that reads what users did scores each row with its day's profiles.
            pools = [feats.attach_profiles(conn, f) for f in pools]
            explored = [feats.attach_profiles(conn, f) for f in explored]
    if ours:
        model = model_store.load_model(models, policy, settings.training.model)
        drifts += _model_view(model, pools, explored,
                              drift.DriftThresholds(), skipped)
        if all("model_score" in f for f in pools):
            shown.append(src.MODEL_COLUMNS[0])
    else:
        skipped.append(f"model view: {policy or 'an undeclared policy'} is not a model of ours")
    # The model's own view and the pools are reported, never a trigger: the scores move
    # whenever the champion changes, the residual whenever it is retrained, the pools
    # with the plays the champion earns.
    trigger = [c for c in drifts if c.column not in INFORMATIONAL]
    drifted_columns = sorted(c.column for c in trigger if c.drifted)
    drifted = bool(drifted_columns)
    large = any(c.value >= d.large_factor * c.threshold for c in trigger)
    with connect() as conn:
        persisting = (_persisting(conn, day, d.persist_days, set(drifted_columns))
                      if judged and drifted else set())
    persistent = bool(persisting)
    share = sum(c.drifted for c in trigger) / len(trigger) if trigger else 0.0
    verdict = drift.DriftVerdict(tuple(drifts), share, drifted and (large or persistent))
    html_rel = f"drift/{day}.html"
    html = settings.reports.cache / html_rel
    html.parent.mkdir(parents=True, exist_ok=True)
    evidently = {}
    if all(len(f) for f in pools) and shown:
        names = [c.name for c in shown if c.name in pools[0]]
        evidently = drift.evidently_report(pools[0][names], pools[1][names],
                                           [c for c in shown if c.name in names], html)
        settings.reports.publish(html_rel)
    where = settings.reports.where(html_rel) if evidently else None
    window = f"{days[0]} .. {days[-1]} ({len(days)} days)"
    with connect() as conn:
        _record(conn, day, policy, days[0], verdict, where,
                {"columns": verdict.as_dict()["columns"], "not_compared": skipped,
                 "drifted": drifted, "drifted_columns": drifted_columns, "large": large,
                 "persistent": persistent, "persisting_columns": sorted(persisting),
                 "calibrated": calibrated, "judged": judged, "reference_days": days,
                 "champion_age_days": champion_age})
    return DayDrift(policy, verdict, window, skipped, evidently, where,
                    drifted=drifted, large=large, persistent=persistent, calibrated=calibrated,
                    champion_age_days=champion_age, drifted_columns=drifted_columns)


def _record(conn, day: str, policy: str | None, reference, verdict, html: str | None,
            details: dict) -> None:
    """The day's row of `monitor.drift_reports` (a day with no reference says why)."""
    warehouse.replace_rows(conn, "monitor.drift_reports", {"partition_date": day}, {
        "partition_date": day, "served_by": policy, "reference_partition": reference,
        "drift_share": verdict.drift_share if verdict else None,
        "dataset_drift": verdict.dataset_drift if verdict else False,
        # Every column with its statistic and threshold, and the verdict's parts.
        "columns": json.dumps(details, default=str),
        "report_path": html, "computed_at": warehouse.now()})
