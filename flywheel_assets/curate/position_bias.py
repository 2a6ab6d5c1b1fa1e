"""Examination probability per position, estimated from the logs themselves.

Randomisation estimator: on requests whose slate was drawn at random (the serving
policy's exploration), every item of the pool is equally likely at every position, so
the rate of *any* logged interaction at position k is theta_k times a constant. Hence
theta_k / theta_1 = rate_k / rate_1, with no model of relevance at all. Any interaction
counts, a skip included: it shows the item was examined. Uncertainty: a Poisson
bootstrap over requests.

Input: impressions of the window, less users flagged as bots (bots look at every
position). Explored requests are recognised by their logged propensities: under the slate-level
epsilon-greedy policy (epsilon < 0.5) a greedy slate has every propensity above 0.5,
a random one has propensities of epsilon / pool size.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd

from flywheel_assets.reporting import markdown_table
from flywheel_assets.warehouse import replace_partition_with_frame, window_start

EXPLORED_PROPENSITY_BELOW = 0.5
METHOD = "randomisation (explored slates), Poisson bootstrap over requests"


def explored_clicks(conn: duckdb.DuckDBPyConnection, partition_date: str,
                    window_days: int, exclude_flagged_users: bool = True) -> pd.DataFrame:
    """Explored slates of the window from ``feedback_events``, less flagged bots.

    Not from ``curated_feedback``: its row filters (contradictions, label noise) remove
    only rows with interactions, and would skew the click rate by position.
    """
    start = window_start(partition_date, window_days)
    bots = ("AND NOT EXISTS (SELECT 1 FROM curated.flagged_users b WHERE "
            "b.partition_date = f.partition_date AND b.user_key = f.user_key)"
            if exclude_flagged_users else "")
    return conn.execute(f"""
        WITH window_rows AS (
            SELECT request_id, position, propensity, n_interactions
            FROM curated.feedback_events f WHERE partition_date BETWEEN $s AND $d {bots}),
        explored AS (SELECT request_id FROM window_rows GROUP BY request_id
                     HAVING bool_or(propensity < {EXPLORED_PROPENSITY_BELOW}))
        SELECT request_id, position, (n_interactions > 0)::INTEGER AS clicked
        FROM window_rows JOIN explored USING (request_id)
        ORDER BY request_id, position""",
                        {"s": start, "d": partition_date}).df()


def estimate(rows: pd.DataFrame, slate_size: int, n_boot: int = 200,
             seed: int = 0) -> pd.DataFrame:
    """theta_k relative to position 1, with a 95% bootstrap interval, per position."""
    positions = np.arange(1, slate_size + 1)
    if rows.empty:
        return pd.DataFrame({"position": positions, "examination": 1.0, "ci_low": np.nan,
                             "ci_high": np.nan, "clicks": 0, "impressions": 0,
                             "explored_requests": 0})
    codes, _ = pd.factorize(rows["request_id"])
    pos = rows["position"].to_numpy() - 1
    keep = (pos >= 0) & (pos < slate_size)
    n_req = codes.max() + 1
    clicks = np.zeros((n_req, slate_size), np.float32)
    shown = np.zeros((n_req, slate_size), np.float32)
    np.add.at(clicks, (codes[keep], pos[keep]), rows["clicked"].to_numpy()[keep])
    np.add.at(shown, (codes[keep], pos[keep]), 1.0)

    def theta(c: np.ndarray, s: np.ndarray) -> np.ndarray:
        rate = c / np.maximum(s, 1e-9)
        return rate / rate[..., :1]

    point = theta(clicks.sum(0), shown.sum(0))
    weights = np.random.default_rng(seed).poisson(1.0, (n_boot, n_req)).astype(np.float32)
    boot = theta(weights @ clicks, weights @ shown)
    return pd.DataFrame({
        "position": positions, "examination": point,
        "ci_low": np.percentile(boot, 2.5, axis=0), "ci_high": np.percentile(boot, 97.5, axis=0),
        "clicks": clicks.sum(0).astype(int), "impressions": shown.sum(0).astype(int),
        "explored_requests": n_req})


def estimate_for_day(conn: duckdb.DuckDBPyConnection, partition_date: str, window_days: int,
                     exclude_flagged_users: bool = True) -> pd.DataFrame:
    """Estimate the curve from the window's explored slates and replace the day's
    partition of `curated.position_bias` with it; returns the curve."""
    rows = explored_clicks(conn, partition_date, window_days, exclude_flagged_users)
    slate_size = int(rows["position"].max()) if len(rows) else 10
    curve = estimate(rows, slate_size).assign(
        partition_date=dt.date.fromisoformat(partition_date),
        window_start=dt.date.fromisoformat(window_start(partition_date, window_days)),
        method=METHOD)
    replace_partition_with_frame(conn, "curated.position_bias", partition_date, curve)
    return curve


def curve_markdown(curve: pd.DataFrame) -> str:
    return markdown_table(
        ["position", "examination", "95% interval", "clicks / shown"],
        [(r.position, f"{r.examination:.3f}", f"{r.ci_low:.3f} – {r.ci_high:.3f}",
          f"{r.clicks} / {r.impressions}") for r in curve.itertuples()])
