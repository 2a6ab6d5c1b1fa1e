"""The day's labelling queue, from the warehouse to the outbox.

The pool is the day's curated, consented examples (the training set's rows of its own
day, with the signals people logged), a seeded hash sample of at most
`labeling.max_candidates`; each is scored by the champion in service after the day's
decision (rank within its request). `selection.select` spends the budget; the queue is
stored in `label.labeling_queue` (with every attribute a model needs, so that a label
that comes back can be learnt from or evaluated on) and written to the outbox.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flywheel_assets import warehouse
from flywheel_assets.label import selection
from flywheel_assets.train import features as feats
from flywheel_assets.train import model as model_lib
from flywheel_assets.train import model_store

POOL_COLUMNS = ("impression_id", "request_id", "ts", "user_key", "item_id", "position",
                "propensity", "device", "country", "age_band", "signup_date", "category",
                "published_date", "duration_s", "popularity", "c0", "c1", "c2", "c3", "c4",
                "c5", "n_interactions", "extras")


def day_pool(conn, partition_date: str, max_rows: int) -> pd.DataFrame:
    """The day's labellable examples: the training set's holdout rows of the day itself
    (never a gold example: the training set leaves those out) whose pair no model of the
    day learnt from (no training row with the same user or request and item), with their
    logged signals. Whole requests, a seeded hash sample of them up to ``max_rows`` rows,
    so that what the champion ranked first is judged within the request."""
    columns = ", ".join(f"t.{c}" for c in POOL_COLUMNS)
    return conn.execute(f"""
        WITH rows AS (
            SELECT {columns}, f.signals, t.label_grade AS implicit_grade
            FROM ml.training_set t
            JOIN curated.curated_feedback f
              ON f.partition_date = t.source_date AND f.impression_id = t.impression_id
            WHERE t.partition_date = $d AND t.source_date = $d AND t.split = 'holdout'
              -- Two anti-joins, not one on "same request or same user": each is a hash
              -- join, where the OR compared every pair of rows of the same item.
              AND NOT EXISTS (
                  SELECT 1 FROM ml.training_set tr
                  WHERE tr.partition_date = $d AND tr.split = 'train'
                    AND tr.item_id = t.item_id AND tr.request_id = t.request_id)
              AND NOT EXISTS (
                  SELECT 1 FROM ml.training_set tr
                  WHERE tr.partition_date = $d AND tr.split = 'train'
                    AND tr.item_id = t.item_id AND tr.user_key = t.user_key)),
        requests AS (
            SELECT request_id, sum(count(*)) OVER (ORDER BY hash(request_id), request_id) AS upto
            FROM rows GROUP BY request_id)
        SELECT rows.* FROM rows JOIN requests USING (request_id)
        WHERE requests.upto <= {int(max_rows)}
        ORDER BY rows.request_id, rows.position, rows.impression_id""",
                        {"d": partition_date}).df()


def labelled_examples(conn, partition_date: str, gold_bound: bool | None = None) -> pd.DataFrame:
    """Examples people labelled by the day (their latest resolved grade) with their
    attributes; ``gold_bound`` False: only those that can never be gold (the audit's
    human-only model learns from these), True: only gold-bound, None: all."""
    reason = "" if gold_bound is None else (
        f"AND q.reason {'IN' if gold_bound else 'NOT IN'} "
        f"({', '.join(repr(r) for r in selection.GOLD_REASONS)})")
    columns = ", ".join(f"q.{c}" for c in POOL_COLUMNS)
    return conn.execute(f"""
        WITH latest AS (SELECT task_key, arg_max(grade, partition_date) AS human_grade
                        FROM label.human_labels WHERE partition_date <= $d GROUP BY task_key)
        SELECT q.task_key, q.reason, {columns}, q.signals, q.implicit_grade, l.human_grade
        FROM latest l JOIN label.labeling_queue q USING (task_key)
        WHERE q.partition_date <= $d {reason}
        ORDER BY q.task_key""", {"d": partition_date}).df()


def with_profiles(conn, rows: pd.DataFrame) -> pd.DataFrame:
    """The rows with the `p_*` features as the models serve them (always: a champion
    trained with profiles still reads them after `profiles.enabled` is switched off)."""
    return feats.attach_profiles(conn, rows) if len(rows) else rows


def champion_scores(settings, conn, rows: pd.DataFrame) -> tuple[np.ndarray, str | None]:
    """The champion's predicted grade of each row (NaN and no version before the first
    promotion: the product's incumbent policy has no scores)."""
    version = model_store.champion_version(settings.models)
    if version is None or not len(rows):
        return np.full(len(rows), np.nan), version
    pipeline = model_store.load_model(settings.models, version, settings.training.model)
    return model_lib.score(pipeline, rows), version


def issued(conn, partition_date: str) -> pd.DataFrame | None:
    """The day's queue when it was issued already (None otherwise)."""
    rows = conn.execute("SELECT * FROM label.labeling_queue WHERE partition_date = ? "
                        "ORDER BY priority", [partition_date]).df()
    return rows if len(rows) else None


def build_queue(conn, settings, partition_date: str, random_state: int = 0) -> dict:
    """Select and store the day's queue; returns its figures. A queue once issued is
    never rebuilt (people may be answering it, and its task keys are what their labels
    come back to): a re-run returns it as it was. To rebuild one, delete its rows from
    `label.labeling_queue` and its outbox folder."""
    lab = settings.labeling
    earlier = issued(conn, partition_date)
    if earlier is not None:
        return {"tasks": len(earlier), "pool": None, "labelled_before": None,
                "by_reason": earlier["reason"].value_counts().to_dict(),
                "champion_version": earlier["champion_version"].dropna().iloc[0]
                if earlier["champion_version"].notna().any() else None,
                "queue": earlier, "reissued": True}
    pool = day_pool(conn, partition_date, lab.max_candidates)
    pool = with_profiles(conn, pool)
    scores, version = champion_scores(settings, conn, pool)
    pool["champion_score"] = scores
    pool["champion_version"] = version
    if np.isfinite(scores).any():
        pool["champion_rank"] = pool.groupby("request_id")["champion_score"].rank(
            ascending=False, method="first").astype("int64")
    else:
        # No model of ours served yet: the order the logging policy showed.
        pool["champion_rank"] = pool.groupby("request_id")["position"].rank(
            method="first").astype("int64")
    known = with_profiles(conn, labelled_examples(conn, partition_date))
    budget = selection.Budget(min(lab.budget, len(pool)), lab.control_share, lab.triage_share)
    if len(pool):
        space_rows = pd.concat([pool, known[pool.columns.intersection(known.columns)]],
                               ignore_index=True) if len(known) else pool
        _, space = selection.feature_space(space_rows, extra_features=settings.training.extra_features)
        X = selection.transform(space, pool)
        known_X = selection.transform(space, known) if len(known) else np.empty((0, X.shape[1]))
        queue = selection.select(pool, X, known_X, known["human_grade"].to_numpy()
                                 if len(known) else np.empty(0), budget, lab.relevant_grade,
                                 lab.min_labels, random_state, lab.committee_size,
                                 selection.signal_boundary(lab.relevant_grade,
                                                           settings.signals.max_grade))
    else:
        queue = pool.assign(reason=pd.Series(dtype=str), priority=pd.Series(dtype=int))
    queue["task_key"] = [f"{partition_date}/{i}" for i in queue["impression_id"]]
    queue["partition_date"] = pd.Timestamp(partition_date).date()
    stored = queue[[c for c in queue.columns if not c.startswith("p_")]]
    rows = warehouse.replace_partition_with_frame(conn, "label.labeling_queue",
                                                  partition_date, stored)
    return {"tasks": rows, "pool": len(pool), "labelled_before": len(known),
            "by_reason": queue["reason"].value_counts().to_dict() if len(queue) else {},
            "champion_version": version, "queue": queue, "reissued": False}

