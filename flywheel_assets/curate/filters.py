"""Curation filters: what should not be learnt from, each removal with its reason.

Bots and spam are found from behaviour per user and day (regular request intervals,
reactions faster than a person, bursts of saves on a few items, an inhuman request
rate); signals that contradict themselves or carry no information are dropped; heavy
users are capped so no single user dominates the training data.
"""

from __future__ import annotations

import duckdb

from flywheel_assets.curate.signals import has_signal
from flywheel_assets.settings import CurationRules

# The filters' thresholds are the `curation_rules` group of the settings.
FilterRules = CurationRules


# Per-user behaviour; anonymous rows (no user id) have no user to judge. Duplicate
# copies of an impression (already in `_removed`) are not counted twice.
USER_FEATURES_SQL = f"""
CREATE OR REPLACE TEMP TABLE _user_features AS
WITH identified AS (SELECT * FROM _day WHERE user_key IS NOT NULL
                    AND impression_id NOT IN (SELECT impression_id FROM _removed)),
requests AS (
    SELECT user_key, request_id, min(ts) AS ts FROM identified GROUP BY ALL),
gaps AS (
    SELECT user_key, epoch(ts) - epoch(lag(ts) OVER (PARTITION BY user_key ORDER BY ts)) AS gap
    FROM requests),
gap_stats AS (
    SELECT user_key, count(gap) AS n_gaps, stddev_samp(gap) / nullif(avg(gap), 0) AS gap_cv
    FROM gaps GROUP BY user_key),
activity AS (
    SELECT user_key, count(DISTINCT request_id) AS n_requests, count(*) AS n_impressions,
           count(*) FILTER (WHERE n_interactions > 0) AS n_reactions,
           median(epoch(first_interaction_ts) - epoch(ts)) FILTER (WHERE n_interactions > 0)
               AS median_reaction_s
    FROM identified GROUP BY user_key),
saves AS (
    SELECT user_key, sum(n) AS n_saves, max(n) / sum(n) AS top_item_save_share
    FROM (SELECT user_key, item_id, count(*) AS n FROM identified WHERE {has_signal("save")}
          GROUP BY ALL) GROUP BY user_key)
SELECT a.*, g.n_gaps, g.gap_cv, coalesce(s.n_saves, 0) AS n_saves, s.top_item_save_share
FROM activity a LEFT JOIN gap_stats g USING (user_key) LEFT JOIN saves s USING (user_key)
"""


def flag_bots(conn: duckdb.DuckDBPyConnection, partition_date: str, rules: FilterRules) -> int:
    """Write ``curated.flagged_users`` for the day from ``_day`` less the duplicate
    copies already in ``_removed``; return how many."""
    conn.execute(USER_FEATURES_SQL)
    reasons = f"""list_filter([
        CASE WHEN n_gaps >= {rules.min_gaps} AND gap_cv < {rules.max_gap_cv}
             THEN 'regular request intervals (gap CV ' || round(gap_cv, 3) || ')' END,
        CASE WHEN n_reactions >= {rules.min_reactions}
                  AND median_reaction_s < {rules.human_reaction_floor_s}
             THEN 'reacts faster than a person (median ' || round(median_reaction_s, 2) || ' s)' END,
        CASE WHEN n_saves >= {rules.min_saves_for_burst}
                  AND top_item_save_share > {rules.max_top_item_save_share}
             THEN 'burst of saves on one item (' || round(100 * top_item_save_share) || '%)' END,
        CASE WHEN n_requests > {rules.max_requests_per_day}
             THEN 'request rate ' || n_requests || '/day' END], lambda x: x IS NOT NULL)"""
    conn.execute("DELETE FROM curated.flagged_users WHERE partition_date = ?", [partition_date])
    conn.execute(f"""
        INSERT INTO curated.flagged_users
        SELECT DATE '{partition_date}', user_key, array_to_string({reasons}, '; '),
               n_requests, gap_cv, median_reaction_s, n_saves, top_item_save_share
        FROM _user_features WHERE len({reasons}) > 0""")
    return conn.execute("SELECT count(*) FROM curated.flagged_users WHERE partition_date = ?",
                        [partition_date]).fetchone()[0]


def removal_sql(partition_date: str, rules: FilterRules) -> list[tuple[str, str]]:
    """(reason, SQL selecting impression_id from ``_day``) for each row-level filter,
    in the order they apply: a row removed by one is not counted again by the next.
    A filter on a signal the product does not log removes nothing."""
    has = has_signal
    return [
        ("bot or spam user", f"""SELECT d.impression_id FROM _day d JOIN curated.flagged_users f
            ON f.user_key = d.user_key AND f.partition_date = DATE '{partition_date}'"""),
        ("contradictory signals (thumbs down with a save, thumbs up or complete)",
         f"SELECT impression_id FROM _day WHERE {has('thumbs_down')} AND ({has('save')} OR "
         f"{has('thumbs_up')} OR {has('complete')})"),
        (f"low information (a lone partial under {rules.min_partial_value:g} watched)",
         f"SELECT impression_id FROM _day WHERE {has('partial')} AND NOT ({has('complete')} OR "
         f"{has('save')} OR {has('thumbs_up')}) AND coalesce(max_value, 0) < "
         f"{rules.min_partial_value}"),
        (f"per-user cap ({rules.per_user_cap} impressions a day)", f"""
            WITH kept AS (
                SELECT impression_id, user_key, ts, position FROM _day
                WHERE user_key IS NOT NULL
                  AND impression_id NOT IN (SELECT impression_id FROM _removed))
            -- Only users over the cap are ranked (a hash aggregate finds them).
            SELECT impression_id FROM (
                SELECT impression_id, row_number() OVER (PARTITION BY user_key
                    ORDER BY ts, position, impression_id) AS n
                FROM kept WHERE user_key IN (
                    SELECT user_key FROM kept GROUP BY user_key
                    HAVING count(*) > {rules.per_user_cap}))
            WHERE n > {rules.per_user_cap}"""),
    ]
