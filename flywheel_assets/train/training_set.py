"""The training set: a rolling window of curated feedback with graded labels.

Rows carry the raw attributes the model's features derive from (user and item
snapshots as of the training day), a graded label from the signal hierarchy, the
learning target and its weight (de-biased by the examination of the row's position), and
a split. The holdout is the training day itself (new to the champion and the
candidate alike); on the very first day, when there is nothing earlier, it is the last
fifth of the day by time. Training rows are capped by a deterministic hash sample.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from flywheel_assets import warehouse
from flywheel_assets.curate.feedback import consent_logged, consent_sql, latest_snapshot_date
from flywheel_assets.label.gold import GOLD_IN, reserved_filter

FIRST_DAY_HOLDOUT_SHARE = 0.2
# People's grades of the examples active learning chose (never gold), as of the day,
# mapped from their 0..3 onto the signal scale 0..max_grade: a labelled row learns the
# human grade, unweighted (a person examined it), instead of the implicit one.
HUMAN_GRADES = f"""
    SELECT q.impression_id,
           round(arg_max(h.grade, h.partition_date) * $max_grade / 3.0)::INTEGER AS human_grade
    FROM label.human_labels h JOIN label.labeling_queue q USING (task_key)
    WHERE h.partition_date <= $d AND q.reason NOT IN ({GOLD_IN})
    GROUP BY q.impression_id"""
# An examination estimate below this (a deep position nobody clicked on the explored
# slates) is taken as this: a target is at most 100 × its grade.
MIN_EXAMINATION = 0.01


def build_training_set(conn: duckdb.DuckDBPyConnection, partition_date: str, window_days: int,
                       max_training_rows: int, use_ips: bool = True,
                       holdout_share: float | None = None, consent: str = "when_logged",
                       max_grade: int = 3) -> dict:
    """Window rows with labels, weights and the learning target.

    With IPS on, ``target`` = ``label_grade`` / θ and ``weight`` = θ, θ the
    examination probability of the row's position (the day's ``curated.position_bias``).
    A silent row at position k is silent partly because nobody looked: the observed
    grade has expectation θ_k × grade-if-examined, so grade / θ_k is an unbiased target
    for the grade a person would give; weighted by θ_k, the least-squares fit of a group
    of rows is Σ grade / Σ θ (observed over expected examination), without the clip an
    unweighted 1/θ needs: a row of a rarely examined position weighs as little as it
    tells. θ is floored at ``MIN_EXAMINATION``. `flywheel benchmark target` measured it against grade × min(1/θ, 10)
    (README). With IPS off, weight 1 and target = grade. A row people labelled (an
    example active learning chose; `label`) learns their grade with weight 1.

    User and item attributes come from the snapshots when the product lands them (NULL
    otherwise); the extra columns of the impression, the user and the item are merged
    into one JSON object (`extras`). Consent is judged again as of the training day
    (policy ``consent``): a withdrawal stops every later training set.
    """
    first_day = warehouse.window_start(partition_date, window_days)
    users_date = latest_snapshot_date(conn, "raw.users", partition_date)
    items_date = latest_snapshot_date(conn, "raw.items", partition_date)
    # IPS needs an identified curve; without one (no declared exploration) weight 1.
    identified = use_ips and conn.execute(
        "SELECT count(*) > 0 AND count(*) = count(examination) FROM curated.position_bias "
        "WHERE partition_date = ?", [partition_date]).fetchone()[0]
    weight = (f"least(greatest(coalesce(pb.examination, 1.0), {MIN_EXAMINATION}), 1.0)"
              if identified else "1.0")
    with warehouse.transaction(conn):
        conn.execute(f"""
            CREATE OR REPLACE TEMP TABLE _window AS
            SELECT DATE '{partition_date}' AS partition_date, f.partition_date AS source_date,
                   f.impression_id, f.request_id, f.ts, f.user_key, f.item_id, f.position,
                   f.propensity, f.device, u.country, u.age_band, u.signup_date,
                   it.category, it.published_date, it.duration_s, it.popularity,
                   it.c0, it.c1, it.c2, it.c3, it.c4, it.c5, f.n_interactions,
                   coalesce(h.human_grade, f.grade) AS label_grade,
                   CASE WHEN h.human_grade IS NULL THEN {weight} ELSE 1.0 END AS weight,
                   h.human_grade,
                   {warehouse.merged_extras("u", "it", "f")} AS extras
            FROM curated.curated_feedback f
            LEFT JOIN curated.position_bias pb
                   ON pb.partition_date = $d AND pb.position = f.position
            LEFT JOIN ({HUMAN_GRADES}) h ON h.impression_id = f.impression_id
            LEFT JOIN raw.users u ON u.user_key = f.user_key AND u.partition_date = $ud
            LEFT JOIN raw.items it ON it.item_id = f.item_id AND it.partition_date = $id
            WHERE f.partition_date BETWEEN $ws AND $d
              AND {consent_sql(consent, consent_logged(conn, users_date))}
              AND {reserved_filter("f", partition_date)}""",
                     {"ud": users_date, "id": items_date, "ws": first_day, "d": partition_date,
                      "max_grade": max_grade})
        earlier = conn.execute(f"SELECT count(*) FROM _window WHERE source_date < DATE "
                               f"'{partition_date}'").fetchone()[0]
        if earlier and not holdout_share:
            holdout = f"source_date = DATE '{partition_date}'"
        else:
            # The first day (nothing earlier), or a retrain asked to learn from the day
            # itself: the day's last share by time is the holdout.
            share = holdout_share or FIRST_DAY_HOLDOUT_SHARE
            cutoff = conn.execute(f"SELECT quantile_disc(ts, {1 - float(share)}) FROM _window "
                                  f"WHERE source_date = DATE '{partition_date}'").fetchone()[0]
            holdout = (f"source_date = DATE '{partition_date}' AND "
                       f"ts >= TIMESTAMPTZ '{cutoff.isoformat()}'" if cutoff else "FALSE")
        rows = warehouse.replace_partition(conn, "ml.training_set", partition_date, f"""
            SELECT *, label_grade / weight AS target, 'holdout' AS split FROM _window WHERE {holdout}
            UNION ALL BY NAME
            (SELECT *, label_grade / weight AS target, 'train' AS split FROM _window
             WHERE NOT ({holdout})
               AND (source_date < DATE '{partition_date}'
                    OR {reserved_filter("_window", partition_date, same_day=True)})
             ORDER BY hash(impression_id), impression_id LIMIT {int(max_training_rows)})""")
        stats = conn.execute("""
            SELECT count(*) FILTER (WHERE split = 'train'), count(*) FILTER (WHERE split = 'holdout'),
                   (SELECT count(*) FROM _window), min(source_date), max(source_date),
                   avg(label_grade)
            FROM ml.training_set WHERE partition_date = ?""", [partition_date]).fetchone()
        ips = conn.execute("""
            SELECT count(*), min(weight), max(target)
            FROM ml.training_set WHERE partition_date = ? AND split = 'train'""",
                           [partition_date]).fetchone()
        ess = effective_sample_size(conn, partition_date)
        human = conn.execute("SELECT count(*) FROM ml.training_set WHERE partition_date = ? "
                             "AND split = 'train' AND human_grade IS NOT NULL",
                             [partition_date]).fetchone()[0]
        grades = dict(conn.execute("SELECT label_grade, count(*) FROM ml.training_set WHERE "
                                   "partition_date = ? GROUP BY 1 ORDER BY 1",
                                   [partition_date]).fetchall())
        conn.execute("DROP TABLE _window")
    return {"rows": rows, "train_rows": stats[0], "holdout_rows": stats[1],
            "window_rows": stats[2], "window_start": str(stats[3]), "window_end": str(stats[4]),
            "mean_grade": float(stats[5] or 0.0), "grade_counts": {int(k): v for k, v in grades.items()},
            "holdout_rule": ("training day" if earlier and not holdout_share else
                             f"last {holdout_share or FIRST_DAY_HOLDOUT_SHARE:.0%} of the training day"),
            "ips": ("on" if identified else
                    "off (position bias not identified: see position_bias)" if use_ips else "off"),
            "target": ("label_grade / examination, weighted by examination" if identified
                       else "label_grade"),
            "min_examination": float(ips[1] or 0.0) if identified else 1.0,
            "max_target": float(ips[2] or 0.0),
            "effective_sample_size": ess, "human_labelled_rows": human,
            "effective_sample_share": ess / ips[0] if ips[0] else 0.0}


def effective_sample_size(conn: duckdb.DuckDBPyConnection, partition_date: str) -> float:
    """(sum w)^2 / sum w^2 of the training rows' weights: how many unweighted rows the
    weighted sample is worth."""
    value = conn.execute("SELECT sum(weight) ^ 2 / nullif(sum(weight ^ 2), 0) FROM ml.training_set "
                         "WHERE partition_date = ? AND split = 'train'", [partition_date]).fetchone()[0]
    return float(value or 0.0)


def read_split(conn: duckdb.DuckDBPyConnection, partition_date: str, split: str) -> pd.DataFrame:
    return conn.execute("SELECT * FROM ml.training_set WHERE partition_date = ? AND split = ? "
                        "ORDER BY request_id, position, impression_id",
                        [partition_date, split]).df()


def fingerprint(conn: duckdb.DuckDBPyConnection, partition_date: str) -> str:
    """What a model learns from, in one string: same rows and labels → same string."""
    n, h = conn.execute("SELECT count(*), sum(hash(impression_id, label_grade, weight, target)) "
                        "FROM ml.training_set WHERE partition_date = ? AND split = 'train'",
                        [partition_date]).fetchone()
    return f"{partition_date}:{n}:{h}"


def usability(conn: duckdb.DuckDBPyConnection, partition_date: str, min_train_rows: int,
              min_holdout_requests: int, max_grade: int) -> tuple[list[str], dict]:
    """What makes the day's training set unusable (empty when it is usable), and the
    counts it was judged on: enough training rows with more than one label grade,
    enough holdout requests, labels within the hierarchy, positive weights."""
    train, grades, holdout_requests, bad_labels, bad_weights = conn.execute("""
        SELECT count(*) FILTER (WHERE split = 'train'),
               count(DISTINCT label_grade) FILTER (WHERE split = 'train'),
               count(DISTINCT request_id) FILTER (WHERE split = 'holdout'),
               count(*) FILTER (WHERE label_grade NOT BETWEEN 0 AND $max OR label_grade IS NULL),
               count(*) FILTER (WHERE NOT weight > 0 OR weight IS NULL)
        FROM ml.training_set WHERE partition_date = $d""",
        {"d": partition_date, "max": max_grade}).fetchone()
    problems: list[str] = []
    if train < min_train_rows:
        problems.append(f"only {train} training rows (need {min_train_rows})")
    if grades < 2:
        problems.append("training labels have a single grade: nothing to learn")
    if holdout_requests < min_holdout_requests:
        problems.append(f"only {holdout_requests} holdout requests (need {min_holdout_requests})")
    if bad_labels:
        problems.append(f"{bad_labels} labels outside 0..{max_grade}")
    if bad_weights:
        problems.append(f"{bad_weights} weights not > 0")
    return problems, {"train_rows": train, "distinct_grades": grades,
                      "holdout_requests": holdout_requests}
