"""Examination probability per position, estimated from what the logs support.

How the logging policy explored is declared by the product, never guessed from the
size of a propensity (`curation.exploration`):

- ``flag`` (default): impressions of randomised slates carry ``explored = true`` (or
  their ``policy_version`` is listed in `curation.random_policies`). On a random slate
  every candidate is equally likely at every position, so the rate of *any* logged
  interaction at position k is θ_k times a constant: θ_k / θ_1 = rate_k / rate_1, with
  no model of relevance. Any interaction counts, a skip included: it shows the item
  was examined. Interval: a Poisson bootstrap over requests.
- ``non_contextual``: the logging policy randomises which item goes where without
  looking at the request (a bandit or Thompson sampling over items, a shuffled
  carousel). The same item then lands at several positions at random, and its click
  rate at position k is θ_k · g(item): θ and g are fitted jointly on the item ×
  position counts (intervention harvesting; alternating closed-form updates of a
  Poisson model). Interval: a Poisson bootstrap of the counts.
- ``none``: the logs cannot identify position bias.

When the curve cannot be identified (no declared exploration, too few explored
requests, positions that share no items), the day's rows say so (examination NULL,
``method`` naming the reason) and training runs without inverse-propensity weights
rather than with a confounded curve. Users flagged as bots are left out (bots look at
every position).
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd

from flywheel_assets.reporting import markdown_table
from flywheel_assets.settings import EXPLORATION_MODES
from flywheel_assets.warehouse import replace_partition_with_frame, window_start

FLAG_METHOD = "randomisation (declared explored slates), Poisson bootstrap over requests"
HARVEST_METHOD = ("intervention harvesting (non-contextual logging policy: items at random "
                  "positions), Poisson bootstrap of the counts")
# Fewer explored requests (or item × position cells) than this: not identified.
MIN_EXPLORED_REQUESTS = 200
MIN_CLICKS_AT_TOP = 20
MIN_POSITION_SHARE = 0.01


def _window_rows(partition_date: str, window_days: int, exclude_flagged_users: bool) -> str:
    start = window_start(partition_date, window_days)
    bots = ("AND NOT EXISTS (SELECT 1 FROM curated.flagged_users b WHERE "
            "b.partition_date = f.partition_date AND b.user_key = f.user_key)"
            if exclude_flagged_users else "")
    return f"""SELECT request_id, item_id, position, explored, policy_version, n_interactions
               FROM curated.feedback_events f
               WHERE partition_date BETWEEN DATE '{start}' AND DATE '{partition_date}' {bots}"""


def declared_random(random_policies: tuple[str, ...] = ()) -> str:
    """SQL, a condition over one request's rows (GROUP BY request_id ... HAVING; the
    drift views group by day and request_id): the product declared its slate random
    (`explored`, or a policy version listed in ``random_policies``,
    `curation.random_policies`)."""
    registry = ", ".join("'" + p.replace("'", "''") + "'" for p in random_policies) or "NULL"
    return (f"(bool_or(coalesce(explored, FALSE)) OR bool_or(policy_version IN ({registry})))")


def explored_clicks(conn: duckdb.DuckDBPyConnection, partition_date: str, window_days: int,
                    exclude_flagged_users: bool = True,
                    random_policies: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows of the window's declared explored slates from ``feedback_events``, less
    flagged bots. Not from ``curated_feedback``: its row filters (contradictions, label
    noise) remove only rows with interactions, and would skew the rate by position."""
    return conn.execute(f"""
        WITH window_rows AS ({_window_rows(partition_date, window_days, exclude_flagged_users)}),
        explored AS (SELECT request_id FROM window_rows GROUP BY request_id
                     HAVING {declared_random(random_policies)})
        SELECT request_id, position, (n_interactions > 0)::INTEGER AS clicked
        FROM window_rows JOIN explored USING (request_id)
        ORDER BY request_id, position""").df()


def item_position_counts(conn: duckdb.DuckDBPyConnection, partition_date: str,
                         window_days: int, exclude_flagged_users: bool = True) -> pd.DataFrame:
    """Impressions and interactions per (item, position) over the window, less bots and
    less the greedy slates of our own models (contextual rankings: only the logging
    policy's slates and declared random ones keep positions independent of the person)."""
    return conn.execute(f"""
        SELECT item_id, position, count(*) AS shown, count(*) FILTER (WHERE n_interactions > 0)
               AS clicks
        FROM ({_window_rows(partition_date, window_days, exclude_flagged_users)})
        WHERE coalesce(explored, FALSE) OR policy_version IS NULL
           OR policy_version NOT IN (SELECT version FROM ml.model_registry)
        GROUP BY item_id, position ORDER BY item_id, position""").df()


def _not_identified(slate_size: int, why: str, explored_requests: int = 0) -> pd.DataFrame:
    positions = np.arange(1, max(slate_size, 1) + 1)
    return pd.DataFrame({"position": positions, "examination": np.nan, "ci_low": np.nan,
                         "ci_high": np.nan, "clicks": 0, "impressions": 0,
                         "explored_requests": explored_requests,
                         "method": f"not identified: {why}", "draws": None})


def estimate(rows: pd.DataFrame, slate_size: int, n_boot: int = 200,
             seed: int = 0) -> pd.DataFrame:
    """θ_k relative to position 1 from explored slates, with a 95% bootstrap interval;
    "not identified" when the rows cannot carry it."""
    n_req = rows["request_id"].nunique() if len(rows) else 0
    if n_req < MIN_EXPLORED_REQUESTS:
        return _not_identified(slate_size, f"{n_req} explored requests in the window "
                                           f"(need {MIN_EXPLORED_REQUESTS})", n_req)
    codes, _ = pd.factorize(rows["request_id"])
    pos = rows["position"].to_numpy() - 1
    keep = (pos >= 0) & (pos < slate_size)
    clicks = np.zeros((n_req, slate_size), np.float32)
    shown = np.zeros((n_req, slate_size), np.float32)
    np.add.at(clicks, (codes[keep], pos[keep]), rows["clicked"].to_numpy()[keep])
    np.add.at(shown, (codes[keep], pos[keep]), 1.0)
    if clicks[:, 0].sum() < MIN_CLICKS_AT_TOP or (shown.sum(0) == 0).any():
        return _not_identified(slate_size, f"{int(clicks[:, 0].sum())} interactions at "
                                           "position 1 of explored slates, or a position "
                                           "never shown", n_req)

    def theta(c: np.ndarray, s: np.ndarray) -> np.ndarray:
        rate = c / np.maximum(s, 1e-9)
        return rate / np.maximum(rate[..., :1], 1e-12)

    point = theta(clicks.sum(0), shown.sum(0))
    weights = np.random.default_rng(seed).poisson(1.0, (n_boot, n_req)).astype(np.float32)
    boot = theta(weights @ clicks, weights @ shown)
    return pd.DataFrame({
        "position": np.arange(1, slate_size + 1), "examination": point,
        "ci_low": np.percentile(boot, 2.5, axis=0), "ci_high": np.percentile(boot, 97.5, axis=0),
        "clicks": clicks.sum(0).astype(int), "impressions": shown.sum(0).astype(int),
        "explored_requests": n_req, "method": FLAG_METHOD, "draws": _draws(boot)})


def _draws(boot: np.ndarray) -> list[list[float]]:
    """Each position's bootstrap draws (kept so that off-policy intervals carry the
    curve's uncertainty: replicate b of an estimate uses draw b of every position)."""
    return [[float(x) for x in boot[:, k]] for k in range(boot.shape[1])]


def _harvest_fit(shown: np.ndarray, clicks: np.ndarray, iterations: int = 200) -> np.ndarray:
    """θ (θ_1 = 1) of clicks ~ Poisson(shown · θ_k · g_i) by alternating updates."""
    theta = np.ones(shown.shape[1])
    for _ in range(iterations):
        g = clicks.sum(1) / np.maximum((shown * theta).sum(1), 1e-12)
        new = clicks.sum(0) / np.maximum((shown * g[:, None]).sum(0), 1e-12)
        new = new / max(new[0], 1e-12)
        if np.abs(new - theta).max() < 1e-9:
            return new
        theta = new
    return theta


def harvest(counts: pd.DataFrame, slate_size: int, n_boot: int = 200,
            seed: int = 0) -> pd.DataFrame:
    """θ_k from items shown at several positions by a non-contextual logging policy."""
    if counts.empty:
        return _not_identified(slate_size, "no impressions in the window")
    items, item_codes = np.unique(counts["item_id"].to_numpy(dtype=object), return_inverse=True)
    pos = counts["position"].to_numpy() - 1
    keep = (pos >= 0) & (pos < slate_size)
    shown = np.zeros((len(items), slate_size))
    clicks = np.zeros((len(items), slate_size))
    np.add.at(shown, (item_codes[keep], pos[keep]), counts["shown"].to_numpy()[keep])
    np.add.at(clicks, (item_codes[keep], pos[keep]), counts["clicks"].to_numpy()[keep])
    # Identified only where each position shares items with position 1.
    shared = ((shown[:, :1] > 0) & (shown > 0)).sum(0)
    if (shared < 2).any() or clicks[:, 0].sum() < MIN_CLICKS_AT_TOP:
        return _not_identified(slate_size, "positions that share no items with position 1, "
                                           "or too few interactions at position 1")
    point = _harvest_fit(shown, clicks)
    rng = np.random.default_rng(seed)
    boot = np.array([_harvest_fit(shown, rng.poisson(clicks).astype(float), 50)
                     for _ in range(n_boot)])
    return pd.DataFrame({
        "position": np.arange(1, slate_size + 1), "examination": point,
        "ci_low": np.percentile(boot, 2.5, axis=0), "ci_high": np.percentile(boot, 97.5, axis=0),
        "clicks": clicks.sum(0).astype(int), "impressions": shown.sum(0).astype(int),
        "explored_requests": 0, "method": HARVEST_METHOD, "draws": _draws(boot)})


def estimate_for_day(conn: duckdb.DuckDBPyConnection, partition_date: str, window_days: int,
                     exclude_flagged_users: bool = True, exploration: str = "flag",
                     random_policies: tuple[str, ...] = ()) -> pd.DataFrame:
    """Estimate the curve as the product's exploration allows and replace the day's
    partition of `curated.position_bias` with it; returns the curve."""
    if exploration not in EXPLORATION_MODES:
        raise ValueError(f"curation.exploration must be one of {EXPLORATION_MODES}, "
                         f"got {exploration!r}")
    # The deepest position shown in at least MIN_POSITION_SHARE of the window's requests:
    # one long request must not add a position that is almost never shown and leave the
    # whole curve unidentified, and deep positions of varied slates still get a θ.
    slate_size = int(conn.execute(f"""
        WITH rows AS (SELECT request_id, position FROM curated.feedback_events
                      WHERE partition_date BETWEEN ? AND ?)
        SELECT coalesce(max(position), 1) FROM (
            SELECT position, count(DISTINCT request_id) AS n FROM rows GROUP BY position)
        WHERE n >= {MIN_POSITION_SHARE} * (SELECT count(DISTINCT request_id) FROM rows)""",
        [window_start(partition_date, window_days), partition_date]).fetchone()[0])
    if exploration == "flag":
        curve = estimate(explored_clicks(conn, partition_date, window_days,
                                         exclude_flagged_users, random_policies), slate_size)
    elif exploration == "non_contextual":
        curve = harvest(item_position_counts(conn, partition_date, window_days,
                                             exclude_flagged_users), slate_size)
    else:
        curve = _not_identified(slate_size, "the product declares no exploration "
                                            "(curation.exploration = none)")
    curve = curve.assign(partition_date=dt.date.fromisoformat(partition_date),
                         window_start=dt.date.fromisoformat(window_start(partition_date,
                                                                         window_days)))
    replace_partition_with_frame(conn, "curated.position_bias", partition_date, curve)
    return curve


def identified(curve: pd.DataFrame) -> bool:
    return bool(curve["examination"].notna().all())


def curve_markdown(curve: pd.DataFrame) -> str:
    if not identified(curve):
        return f"Position bias {curve['method'].iloc[0]}: training runs without IPS."
    return markdown_table(
        ["position", "examination", "95% interval", "clicks / shown"],
        [(r.position, f"{r.examination:.3f}", f"{r.ci_low:.3f} – {r.ci_high:.3f}",
          f"{r.clicks} / {r.impressions}") for r in curve.itertuples()])
