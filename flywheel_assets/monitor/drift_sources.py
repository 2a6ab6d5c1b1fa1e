"""What drift compares: the day against the days just before it.

Only what the serving policy does not choose is compared, or the loop would report its
own choices as drift (a new champion shows other items, so the *shown* items' features
always move). Four views, each a SELECT over one kind of row:

- requests (one row per request, bots left out): device, country, age band, hour,
  tenure — who asks, and when;
- the catalogue (one row per item of the day's snapshot): what exists to be offered —
  a drop of new items, a change of mix;
- candidate pools (one row per candidate): the item attributes of what retrieval
  offered, whatever the ranking; a reproducible sample of each side. Reported, not a
  trigger: retrieval follows popularity, and popularity counts the product's own
  plays, so a new champion moves the pools a few days later (a demo run of commit
  3a6edf8: the pools' content features drifted on days 4 and 5, after the first
  promotion). Popularity is compared as the item's percentile in its day's catalogue,
  not as a count;
- explored slates (random slates of the exploration, one row per impression): the
  graded signal and whether the item was examined — how people react, free of the
  ranking.

The model's own view is compared on samples (scores are not a DuckDB job): its scores
on pool candidates, and its residual (grade − prediction) on explored impressions,
which moves when what people like changes even if nothing else does. The residual's
reference is the model's own training day less what it trained on: residuals on
training rows are smaller (the model has seen them) and would always read as drift.
"""

from __future__ import annotations

from flywheel_assets.curate.position_bias import declared_random
from flywheel_assets.monitor.drift import ColumnSpec
from flywheel_assets.warehouse import merged_extras

REQUEST_COLUMNS = [ColumnSpec("device", "categorical"), ColumnSpec("country", "categorical"),
                   ColumnSpec("age_band", "categorical"), ColumnSpec("hour", "numeric"),
                   ColumnSpec("tenure_days", "numeric")]
POOL_COLUMNS = [ColumnSpec("category", "categorical"),
                *(ColumnSpec(c, "numeric") for c in ("popularity_percentile", "log_duration",
                                                     "item_age_days", "c0", "c1", "c2",
                                                     "c3", "c4", "c5"))]
# The catalogue itself (the items snapshot): what exists to be offered, which the
# product's own serving does not move (pools do: retrieval follows popularity, and
# popularity counts the product's own plays).
CATALOGUE_COLUMNS = [ColumnSpec("catalogue_category", "categorical"),
                     *(ColumnSpec(f"catalogue_{c}", "numeric")
                       for c in ("log_duration", "item_age_days", "c0", "c1", "c2", "c3", "c4",
                                 "c5"))]
SIGNAL_COLUMNS = [ColumnSpec("grade", "categorical"), ColumnSpec("examined", "categorical")]
MODEL_COLUMNS = [ColumnSpec("model_score", "numeric"), ColumnSpec("model_residual", "numeric")]

_NOT_BOT = ("NOT EXISTS (SELECT 1 FROM curated.flagged_users b WHERE "
            "b.partition_date = f.partition_date AND b.user_key = f.user_key)")


def _days(days: list[str]) -> str:
    """SQL: partition_date in ``days`` (ISO days)."""
    return "IN (" + ", ".join(f"DATE '{d}'" for d in days) + ")"


def _day_column(alias: str, day_column: bool) -> str:
    """SQL: the row's day as `_day`, when asked for (calibration reads each day once)."""
    return f", {alias}partition_date AS _day" if day_column else ""


def requests_sql(days: list[str], day_column: bool = False) -> str:
    """One row per request of the days, with the user's snapshot of that day."""
    return f"""
        SELECT r.device, u.country, u.age_band, extract(hour FROM r.ts)::DOUBLE AS hour,
               (r.ts::DATE - u.signup_date)::DOUBLE AS tenure_days{_day_column("r.", day_column)}
        FROM (SELECT partition_date, request_id, any_value(user_key) AS user_key,
                     min(ts) AS ts, any_value(device) AS device
              FROM curated.feedback_events f
              WHERE partition_date {_days(days)} AND {_NOT_BOT}
              GROUP BY partition_date, request_id) r
        LEFT JOIN raw.users u ON u.user_key = r.user_key AND u.partition_date = r.partition_date"""


def catalogue_sql(days: list[str], day_column: bool = False) -> str:
    """One row per item of each day's items snapshot."""
    return f"""
        SELECT category AS catalogue_category{_day_column("", day_column)},
               ln(1 + greatest(duration_s, 0)) AS catalogue_log_duration,
               (partition_date - published_date)::DOUBLE AS catalogue_item_age_days,
               c0 AS catalogue_c0, c1 AS catalogue_c1, c2 AS catalogue_c2, c3 AS catalogue_c3,
               c4 AS catalogue_c4, c5 AS catalogue_c5
        FROM raw.items WHERE partition_date {_days(days)}"""


def pools_sql(days: list[str], sample_rows: int, with_context: bool = False,
              day_column: bool = False) -> str:
    """Candidates of the days' pools with their items' attributes: a reproducible sample
    of ``sample_rows``. With context, each candidate also carries its request's user and
    context, so that the model can score it."""
    context = (f"""
        , c.item_id, r.user_key, r.ts, r.device, u.country, u.age_band, u.signup_date, it.published_date,
          it.popularity, it.duration_s, extract(hour FROM r.ts)::DOUBLE AS hour,
          (r.ts::DATE - u.signup_date)::DOUBLE AS tenure_days,
          {merged_extras("u", "it", "r")} AS extras""" if with_context else "")
    joins = ("""
        JOIN (SELECT request_id, any_value(user_key) AS user_key, min(ts) AS ts,
                     any_value(device) AS device, any_value(partition_date) AS day,
                     any_value(extras) AS extras
              FROM curated.feedback_events f WHERE partition_date {days} AND {not_bot}
              GROUP BY request_id) r ON r.request_id = c.request_id
        LEFT JOIN raw.users u ON u.user_key = r.user_key AND u.partition_date = r.day"""
             .format(days=_days(days), not_bot=_NOT_BOT) if with_context else "")
    return f"""
        SELECT it.category, it.popularity_percentile,
               ln(1 + greatest(it.duration_s, 0)) AS log_duration,
               (c.partition_date - it.published_date)::DOUBLE AS item_age_days,
               it.c0, it.c1, it.c2, it.c3, it.c4, it.c5{context}{_day_column("c.", day_column)}
        FROM (SELECT * FROM (SELECT * FROM raw.candidates
                             WHERE partition_date {_days(days)})
              USING SAMPLE reservoir({int(sample_rows)} ROWS) REPEATABLE (7)) c
        LEFT JOIN (SELECT *, percent_rank() OVER (PARTITION BY partition_date ORDER BY popularity)
                               AS popularity_percentile
                   FROM raw.items WHERE partition_date {_days(days)}) it
          ON it.item_id = c.item_id AND it.partition_date = c.partition_date
        {joins}"""


def explored_sql(days: list[str], with_context: bool = False,
                 unseen_by: str | None = None, random_policies: tuple[str, ...] = (),
                 day_column: bool = False) -> str:
    """Impressions of the declared explored (random) slates of the days (`explored`, or a
    policy version listed in ``random_policies``), bots left out; with ``unseen_by`` (a
    model's training partition), only requests that model did not train on, so that its
    residuals are out-of-sample on both sides. A request is judged random within its
    day."""
    context = (f"""
        , f.item_id, f.user_key, f.ts, u.country, u.age_band, u.signup_date, it.category,
          it.published_date, it.duration_s, it.popularity, it.c0, it.c1, it.c2, it.c3, it.c4,
          it.c5, f.device AS device, {merged_extras("u", "it", "f")} AS extras"""
               if with_context else "")
    unseen = (f"AND f.request_id NOT IN (SELECT request_id FROM ml.training_set WHERE "
              f"partition_date = DATE '{unseen_by}' AND split = 'train')" if unseen_by else "")
    joins = ("""
        LEFT JOIN raw.users u ON u.user_key = f.user_key AND u.partition_date = f.partition_date
        LEFT JOIN raw.items it ON it.item_id = f.item_id AND it.partition_date = f.partition_date"""
             if with_context else "")
    return f"""
        SELECT grade::VARCHAR AS grade, (n_interactions > 0)::VARCHAR AS examined,
               grade AS grade_value{context}{_day_column("f.", day_column)}
        FROM curated.feedback_events f {joins}
        WHERE f.partition_date {_days(days)} AND {_NOT_BOT}
          AND (f.partition_date, f.request_id) IN (
              SELECT partition_date, request_id FROM curated.feedback_events
              WHERE partition_date {_days(days)}
              GROUP BY partition_date, request_id HAVING {declared_random(random_policies)})
          {unseen}"""
