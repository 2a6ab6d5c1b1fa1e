"""A day's logged requests with their candidate pools: what off-policy evaluation reads.

One row per (request, candidate) with the raw attributes the model scores, the logging
policy's exposure propensity, and, when the candidate was shown, its position and the
grade it received (0 when silent). Requests come from `feedback_events` (consenting
users) less the users flagged as bots that day, less any request in the day's
training split and any slate with a missing impression, hash-sampled to a bounded
number. A position missing from `position_bias` counts as examined (examination 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from flywheel_assets.curate.feedback import latest_snapshot_date
from flywheel_assets.evaluate.off_policy import TargetRows
from flywheel_assets.serve.serving import PLAIN_TOP_K, Reranking


def logged_pools(conn: duckdb.DuckDBPyConnection, partition_date: str,
                 max_requests: int) -> pd.DataFrame:
    """The day's requests with a logged pool, ordered by request then item. User and
    item attributes are NULL where the product lands no snapshot."""
    users_date = latest_snapshot_date(conn, "raw.users", partition_date)
    items_date = latest_snapshot_date(conn, "raw.items", partition_date)
    return conn.execute("""
        WITH events AS (
            SELECT * FROM curated.feedback_events f
            WHERE f.partition_date = $d AND NOT EXISTS (
                SELECT 1 FROM curated.flagged_users b
                WHERE b.partition_date = f.partition_date AND b.user_key = f.user_key)),
        requests AS (
            SELECT request_id, any_value(user_key) AS user_key, min(ts) AS ts,
                   any_value(device) AS device, any_value(extras) AS extras
            FROM events WHERE request_id IN (SELECT request_id FROM raw.candidates
                                             WHERE partition_date = $d)
            -- Never value a model on the requests it learnt from (on the first day the
            -- training set takes most of the day itself).
            AND request_id NOT IN (SELECT request_id FROM ml.training_set
                                   WHERE partition_date = $d AND split = 'train')
            GROUP BY request_id
            -- Complete slates only: with an impression quarantined (a broken client), a
            -- shown item would read as never shown.
            HAVING count(DISTINCT position) = max(position)
            ORDER BY hash(request_id), request_id LIMIT $n),
        shown AS (
            -- A double-logged impression is one showing: keep its best position and grade.
            SELECT request_id, item_id, min(position) AS shown_position,
                   max(grade) AS grade
            FROM events GROUP BY request_id, item_id),
        pools AS (
            SELECT request_id, item_id, max(exposure_propensity) AS exposure
            FROM raw.candidates WHERE partition_date = $d GROUP BY request_id, item_id)
        SELECT r.request_id, p.item_id, p.exposure, s.shown_position,
               coalesce(s.grade, 0) AS grade, r.ts, r.device, u.country, u.age_band,
               u.signup_date, it.category, it.published_date, it.duration_s, it.popularity,
               it.c0, it.c1, it.c2, it.c3, it.c4, it.c5,
               nullif(json_merge_patch(coalesce(u.extras, '{}'), coalesce(it.extras, '{}'),
                                       coalesce(r.extras, '{}'))::VARCHAR, '{}') AS extras
        FROM requests r
        JOIN pools p USING (request_id)
        LEFT JOIN raw.users u ON u.user_key = r.user_key AND u.partition_date = $ud
        LEFT JOIN raw.items it ON it.item_id = p.item_id AND it.partition_date = $id
        LEFT JOIN shown s ON s.request_id = p.request_id AND s.item_id = p.item_id
        ORDER BY r.request_id, p.item_id""",
                        {"d": partition_date, "n": int(max_requests), "ud": users_date,
                         "id": items_date}).df()


@dataclass(frozen=True)
class PoolMatrix:
    """Logged pools as R×P matrices, candidates in item-id order within each request:
    the tie-break of the policies valued here (the world's oracle uses the same one to
    value them; serving itself breaks ties by pool order, which only matters for
    exactly equal scores)."""

    request_ids: np.ndarray
    row_index: np.ndarray      # R×P: row of `pools` (for scores computed on the frame)
    item_ids: np.ndarray       # R×P
    categories: np.ndarray | None  # R×P integer codes (None: the product logs no category)
    popularity: np.ndarray | None  # R×P, from the catalogue snapshot (None: not logged)
    exposure: np.ndarray       # R×P
    shown_position: np.ndarray  # R×P, NaN where not shown
    grade: np.ndarray          # R×P
    dropped_requests: int      # requests whose pool size differed from the usual one


def pool_matrix(pools: pd.DataFrame) -> PoolMatrix:
    """Requests with the usual pool size (the mode) as matrices; others are counted."""
    sizes = pools.groupby("request_id", sort=False).size()
    size = int(sizes.mode().iloc[0])
    keep_requests = sizes.index[sizes == size]
    rows = np.flatnonzero(pools["request_id"].isin(keep_requests).to_numpy())
    shape = (len(keep_requests), size)
    codes, _ = pd.factorize(pools["category"], sort=True)

    def matrix(values: np.ndarray) -> np.ndarray:
        return values[rows].reshape(shape)

    return PoolMatrix(
        request_ids=pools["request_id"].to_numpy()[rows][::size],
        row_index=rows.reshape(shape),
        item_ids=matrix(pools["item_id"].to_numpy()),
        categories=matrix(codes) if pools["category"].notna().any() else None,
        popularity=(matrix(pools["popularity"].to_numpy(dtype="float64"))
                    if pools["popularity"].notna().all() else None),
        exposure=matrix(pools["exposure"].to_numpy(dtype="float64")),
        shown_position=matrix(pools["shown_position"].to_numpy(dtype="float64")),
        grade=matrix(pools["grade"].to_numpy(dtype="float64")),
        dropped_requests=int((sizes != size).sum()))


def target_rows(m: PoolMatrix, scores: np.ndarray, reward_model: np.ndarray,
                examination: dict[int, float], k: int, reranking: Reranking = PLAIN_TOP_K
                ) -> tuple[TargetRows, np.ndarray]:
    """The policy "serve each pool by these scores" (R×P; top-k, or re-ranked as
    `serving` does) as rows for the off-policy estimators; also returns its slates
    (R×k pool columns)."""
    slates = reranking.slates(scores, min(k, scores.shape[1]), m.categories, m.popularity)
    pick = lambda a: np.take_along_axis(a, slates, axis=1).ravel()  # noqa: E731
    shown_position = pick(m.shown_position)
    shown = ~np.isnan(shown_position)
    at = np.nan_to_num(shown_position).astype(np.int64)
    lookup = np.ones(int(at.max(initial=0)) + 1)
    for pos, value in examination.items():
        if 0 <= pos < len(lookup):
            lookup[pos] = value
    theta = lookup[at]
    n, kk = slates.shape
    rows = TargetRows(request=np.repeat(np.arange(n), kk), position=np.tile(np.arange(1, kk + 1), n),
                      shown=shown, exposure=pick(m.exposure),
                      debiased_grade=np.where(shown, pick(m.grade) / np.maximum(theta, 1e-6), 0.0),
                      reward_model=pick(reward_model), n_requests=n)
    return rows, slates
