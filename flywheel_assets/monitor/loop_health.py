"""Is the loop degenerating? Concentration of the policy in service, rotation by rotation.

A flywheel that learns from its own exposure can narrow onto a few items a little more
every day, each step within the gate's per-rotation tolerance. This looks at the trend:
the exposure Gini of the slates the model in service would serve, on each day's logged
requests (from `model_evaluation`), and calls it rising when it went up at every one of
the last few rotations.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import duckdb

from flywheel_assets import warehouse
from flywheel_assets.evaluate.evaluation import read_evaluation
from flywheel_assets.reporting import data_uri, new_figure, png_bytes
from flywheel_assets.settings import MonitorSettings, Settings
from flywheel_assets.train import model_store


def in_service_series(conn: duckdb.DuckDBPyConnection, up_to: str,
                             rotations: int) -> list[dict]:
    """Per day (oldest first, at most ``rotations`` + 1 days up to ``up_to``): the exposure
    Gini, catalogue coverage and off-policy value (DR) of the model that was in service
    after that day's gate, valued on that day's logged requests, and the days of data
    landed by then (the compounding curve: quality against days of data)."""
    rows = conn.execute("""
        SELECT e.partition_date, e.metrics, p.promoted
        FROM ml.model_evaluations e
        LEFT JOIN (SELECT partition_date, arg_max(promoted, decided_at) AS promoted
                   FROM ml.promotions WHERE actor = 'gate' GROUP BY partition_date) p
               ON p.partition_date = e.partition_date
        WHERE e.partition_date <= ?
        ORDER BY e.partition_date DESC LIMIT ?""", [up_to, rotations + 1]).fetchall()
    landed = sorted(r[0] for r in conn.execute(
        "SELECT DISTINCT partition_date FROM raw.landing_files WHERE stream = 'impressions' "
        "AND rows_read > 0 AND partition_date <= ?", [up_to]).fetchall())
    out = []
    for day, metrics, promoted in reversed(rows):
        policies = (json.loads(metrics).get("off_policy") or {}).get("policies", {})
        # The policy in service after the gate: the candidate if promoted, else the
        # champion, or before any model of ours the logging policy.
        chosen = ("candidate" if promoted else "champion" if "champion" in policies
                  else "logging")
        if chosen in policies:
            out.append({"date": str(day), "model": chosen,
                        "exposure_gini": policies[chosen]["exposure_gini"],
                        "catalog_coverage": policies[chosen]["catalog_coverage"],
                        "value": policies[chosen]["dr"]["value"],
                        # What the wheel has had to learn from by then.
                        "days_of_data": sum(1 for d in landed if d <= day)})
    return out


def concentration_rising(series: list[dict], rotations: int, min_step: float = 0.0) -> bool:
    """True when the Gini rose by more than ``min_step`` at each of the last
    ``rotations`` rotations (needs ``rotations`` + 1 points)."""
    if len(series) < rotations + 1:
        return False
    gini = [p["exposure_gini"] for p in series[-(rotations + 1):]]
    return all(b - a > min_step for a, b in zip(gini, gini[1:]))


# --- the three preconditions of a working flywheel, and the quality trend -----------

TREND_ROTATIONS = MonitorSettings.trend_rotations
TREND_STEP = MonitorSettings.trend_step  # relative change of the in-service value per rotation


def signal_valid(evaluation: dict) -> dict:
    """The signal is valid when the model trained on it beats the no-learning baseline
    (popularity) on held-out data; gold-set metrics join when a gold set exists."""
    holdout = evaluation["holdout"]
    model, base = holdout["candidate"]["ndcg_at_k"], holdout["popularity"]["ndcg_at_k"]
    if math.isnan(model) or math.isnan(base):
        # The holdout cannot rank (one examined item per request, or all of one grade):
        # it says nothing either way.
        return {"ok": None, "k": evaluation.get("k"), "candidate_holdout_ndcg_at_k": model,
                "popularity_holdout_ndcg_at_k": base, "why": "no information in the holdout",
                "gold_set": "none yet (labelling issue)"}
    return {"ok": bool(model > base), "k": evaluation.get("k"),
            "candidate_holdout_ndcg_at_k": model, "popularity_holdout_ndcg_at_k": base,
            "gold_set": "none yet (labelling issue)"}


def loop_closed(card: dict | None, landed_days: set[str], trained_days: set[str]) -> dict:
    """The loop is closed when the champion in service traces back to the partitions it
    learnt from: every day of its training window landed and its training set exists."""
    if card is None:
        return {"ok": False, "why": "no champion in service yet"}
    window = _days(card["window_start"], card["window_end"])
    missing = [d for d in window if d not in landed_days]
    trained_for = str(card["partition_date"])[:10]
    return {"ok": not missing and trained_for in trained_days,
            "champion_trained_for": trained_for,
            "window": f"{card['window_start']} .. {card['window_end']}",
            "window_days_missing_landing": missing,
            "training_set_present": trained_for in trained_days}


def event_to_champion_hours(landed_at: float | None, promoted_at: float | None) -> float | None:
    """Hours from the newest day the champion learnt from landing to the champion being
    in service."""
    if landed_at is None or promoted_at is None:
        return None
    return max(promoted_at - landed_at, 0.0) / 3600.0


def slope(values: list[float | None]) -> float | None:
    """Least-squares slope per step of ``values`` (missing values skipped, positions
    kept); None with fewer than 2 values."""
    points = [(i, v) for i, v in enumerate(values) if v is not None]
    if len(points) < 2:
        return None
    mx = sum(i for i, _ in points) / len(points)
    my = sum(v for _, v in points) / len(points)
    return (sum((i - mx) * (v - my) for i, v in points)
            / sum((i - mx) ** 2 for i, _ in points))


def quality_trend(values: list[float], rotations: int = TREND_ROTATIONS,
                  step: float = TREND_STEP) -> dict:
    """Improving, saturating or degrading: the least-squares slope of the in-service
    model's value over the last rotations, relative to its mean."""
    recent = [v for v in values[-rotations:] if v is not None]
    if len(recent) < 3:
        return {"trend": "too early", "relative_slope": None, "points": len(recent)}
    my = sum(recent) / len(recent)
    rel = slope(recent) / my if my else 0.0
    trend = "improving" if rel > step else "degrading" if rel < -step else "saturating"
    return {"trend": trend, "relative_slope": rel, "points": len(recent)}


def _days(start: str, end: str) -> list[str]:
    # Cards may carry dates or midnight timestamps: the first ten characters are the day.
    a, b = dt.date.fromisoformat(str(start)[:10]), dt.date.fromisoformat(str(end)[:10])
    return [(a + dt.timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


def human_signal_validity(conn, settings: Settings, partition_date: str) -> dict:
    """What each logged signal says about people's judgement, on the gold set's random
    control slice (label/gold.py `signal_validity`); empty before a gold version."""
    from flywheel_assets.label import gold as gold_lib

    rows = gold_lib.gold_rows(conn, partition_date)
    if rows.empty:
        return {"examples": 0, "signals": {}}
    return {"gold_version": str(rows["version"].iloc[0]),
            **gold_lib.signal_validity(rows, settings.signals.grades,
                                       settings.labeling.relevant_grade)}


def assess_day(connect, settings: Settings, partition_date: str) -> dict:
    """The loop's health after the day's rotation, recorded in `monitor.flywheel_health`:
    signal valid, loop closed, event → champion hours, the quality trend of the model in
    service, and an overall verdict; with ``summary``, a markdown paragraph and chart."""
    day, m = partition_date, settings.monitor
    pointer = model_store.read_champion(settings.models)
    card = model_store.load_card(settings.models, pointer["version"]) if pointer else None
    with connect() as conn:
        evaluation = read_evaluation(conn, day)
        # Days up to this one: a later day already read in (a backfill's next day) is
        # not part of this day's loop.
        landed = {str(r[0]) for r in conn.execute(
            "SELECT DISTINCT partition_date FROM raw.landing_files WHERE stream = 'impressions' "
            "AND rows_read > 0 AND partition_date <= ?", [day]).fetchall()}
        trained = {str(r[0]) for r in conn.execute(
            "SELECT DISTINCT partition_date FROM ml.training_set WHERE partition_date <= ?",
            [day]).fetchall()}
        series = in_service_series(conn, day, m.chart_rotations)
        against_people = human_signal_validity(conn, settings, day)
    valid = signal_valid(evaluation)
    closed = loop_closed(card, landed, trained)
    landed_at = None
    if card:
        marker = f"impressions/date={str(card['window_end'])[:10]}/_SUCCESS"
        landed_at = (settings.landing.mtime(marker) if settings.landing.exists(marker)
                     else None)
    promoted_at = (dt.datetime.fromisoformat(pointer["promoted_at"]).timestamp()
                   if pointer else None)
    hours = event_to_champion_hours(landed_at, promoted_at)
    trend = quality_trend([p["value"] for p in series], m.trend_rotations, m.trend_step)
    verdict = ("healthy" if valid["ok"] is not False and closed["ok"]
               and trend["trend"] != "degrading" else "attention")
    details = {"signal_valid": valid, "loop_closed": closed, "event_to_champion_hours": hours,
               "quality_trend": trend, "in_service": series}
    with connect() as conn:
        warehouse.replace_rows(conn, "monitor.flywheel_health", {"partition_date": day}, {
            "partition_date": day, "signal_valid": valid["ok"], "loop_closed": closed["ok"],
            "event_to_champion_hours": hours, "quality_trend": trend["trend"],
            "details": json.dumps(details, default=str), "computed_at": warehouse.now()})
    return {"verdict": verdict, "signal_valid": valid, "loop_closed": closed,
            "event_to_champion_hours": hours, "quality_trend": trend,
            "signals_against_human_labels": against_people,
            "details": json.loads(json.dumps(details, default=str)),
            "summary": _summary(verdict, valid, closed, hours, trend, series)}


def _summary(verdict, valid, closed, hours, trend, series) -> str:
    fig, ax = new_figure(5, 2.2)
    ax.plot([p["days_of_data"] for p in series], [p["value"] for p in series], marker="o")
    ax.set_xlabel("days of data", fontsize=7)
    ax.set_title(f"in-service model, off-policy DCG@{valid.get('k') or 'K'} against days of "
                 f"data: {trend['trend']}", fontsize=9)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    signal = {True: "yes", False: "NO", None: "no information"}[valid["ok"]]
    return (f"**{verdict}** — signal valid: {signal} "
            f"(holdout NDCG@{valid.get('k') or 'K'} {valid['candidate_holdout_ndcg_at_k']:.3f} vs "
            f"popularity {valid['popularity_holdout_ndcg_at_k']:.3f}); loop closed: "
            f"{'yes' if closed['ok'] else 'NO'}; event → champion: "
            + (f"{hours:.2f} h" if hours is not None else "n/a")
            + f"; quality: {trend['trend']}\n\n![trend]({data_uri(png_bytes(fig))})")
