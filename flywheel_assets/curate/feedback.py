"""Curation in SQL: impressions joined with their outcomes, then cleaned.

Every impression removed on the way is written to ``curated.feedback_removals`` with
its reason, so curated rows + removed rows = input rows, per partition.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from flywheel_assets import warehouse
from flywheel_assets.curate.filters import FilterRules, flag_bots, removal_sql
from flywheel_assets.curate.label_noise import flag_label_issues
from flywheel_assets.curate.signals import grade_sql
from flywheel_assets.settings import DEFAULT_GRADES


def latest_snapshot_date(conn: duckdb.DuckDBPyConnection, table: str, partition_date: str):
    """The newest snapshot partition on or before the day (snapshots may skip days)."""
    return conn.execute(f"SELECT max(partition_date) FROM {table} WHERE partition_date <= ?",
                        [partition_date]).fetchone()[0]


def consent_sql(policy: str, consent_logged: bool, flag: str = "u.consent_training") -> str:
    """SQL: may this row be learnt from? (settings: `curation.consent`)"""
    if policy == "not_logged":
        return "TRUE"
    if policy == "required" or consent_logged:
        return f"coalesce({flag}, FALSE)"
    return f"coalesce({flag}, TRUE)"


def consent_logged(conn: duckdb.DuckDBPyConnection, users_date) -> bool:
    """Does the product log training consent: has any users snapshot up to this one
    carried a flag? Once it has, a later snapshot without flags (or without the column)
    does not turn consent off: rows without a flag are excluded (fail closed)."""
    return users_date is not None and conn.execute(
        "SELECT count(consent_training) > 0 FROM raw.users WHERE partition_date <= ?",
        [users_date]).fetchone()[0]


def build_feedback_events(conn: duckdb.DuckDBPyConnection, partition_date: str,
                          grades: dict[str, int] = DEFAULT_GRADES,
                          consent: str = "when_logged") -> dict:
    """One row per impression with the signals logged on it and its grade (the
    strongest signal's, from ``grades``); rows without training consent (policy
    ``consent``, `curation.consent`) are excluded and counted."""
    users_date = latest_snapshot_date(conn, "raw.users", partition_date)
    allowed = consent_sql(consent, consent_logged(conn, users_date))
    with warehouse.transaction(conn):
        conn.execute("DELETE FROM curated.feedback_removals WHERE partition_date = ? "
                     "AND stage = 'feedback_events'", [partition_date])
        conn.execute(f"""
            CREATE OR REPLACE TEMP TABLE _joined AS
            SELECT i.partition_date, i.impression_id, i.request_id, i.ts, i.user_key,
                   i.item_id, i.position, i.propensity, i.policy_version, i.device, i.explored,
                   coalesce(e.n_interactions, 0) AS n_interactions, e.signals,
                   {grade_sql(grades, "e.signals")} AS grade,
                   e.max_value, e.first_interaction_ts, i.extras,
                   {allowed} AS _consent
            FROM raw.impressions i
            LEFT JOIN (
                -- A replayed event (same impression, signal and time) counts once.
                SELECT impression_id, count(DISTINCT (signal, ts)) AS n_interactions,
                       list_sort(list(DISTINCT signal)) AS signals, max(value) AS max_value,
                       min(ts) AS first_interaction_ts
                FROM raw.interactions WHERE partition_date = $d GROUP BY impression_id
            ) e USING (impression_id)
            LEFT JOIN (SELECT user_key, consent_training FROM raw.users
                       WHERE partition_date = $u) u ON u.user_key = i.user_key
            WHERE i.partition_date = $d""", {"d": partition_date, "u": users_date})
        conn.execute("""INSERT INTO curated.feedback_removals
            SELECT partition_date, impression_id, 'feedback_events', 'no training consent'
            FROM _joined WHERE NOT _consent""")
        rows = warehouse.replace_partition(
            conn, "curated.feedback_events", partition_date,
            "SELECT * EXCLUDE (_consent) FROM _joined WHERE _consent")
        stats = conn.execute("""
            SELECT count(*) FILTER (WHERE NOT _consent),
                   count(*) FILTER (WHERE _consent AND n_interactions > 0),
                   count(*) FILTER (WHERE user_key IS NULL)
            FROM _joined""").fetchone()
        orphans = conn.execute("""
            SELECT count(*) FROM raw.interactions x WHERE x.partition_date = $d
            AND NOT EXISTS (SELECT 1 FROM raw.impressions i WHERE i.partition_date = $d
                            AND i.impression_id = x.impression_id)""",
                               {"d": partition_date}).fetchone()[0]
        conn.execute("DROP TABLE _joined")
    return {"rows": rows, "excluded_no_consent": stats[0], "with_interactions": stats[1],
            "anonymous_impressions": stats[2], "orphan_interactions": orphans,
            "users_snapshot": str(users_date), "consent_policy": consent}


def build_curated_feedback(conn: duckdb.DuckDBPyConnection, partition_date: str,
                           use_filters: bool = True, rules: FilterRules = FilterRules(),
                           max_label_issue_share: float = 0.0,
                           max_categories: int = 250) -> dict:
    """Feedback fit to learn from. Always: double-logged impressions (same request and
    item) removed, the first kept. With filters on: bot and spam users, contradictory
    and low-information signals, the per-user cap, and, with ``max_label_issue_share``
    > 0, label noise (cleanlab)."""
    counts: dict[str, int] = {}
    with warehouse.transaction(conn):
        conn.execute("DELETE FROM curated.feedback_removals WHERE partition_date = ? "
                     "AND stage = 'curated_feedback'", [partition_date])
        conn.execute("""
            CREATE OR REPLACE TEMP TABLE _day AS
            SELECT * FROM curated.feedback_events WHERE partition_date = ?""", [partition_date])
        conn.execute("CREATE OR REPLACE TEMP TABLE _removed (impression_id VARCHAR, reason VARCHAR)")
        dedupe = ("duplicate impression of the same request and item", """
            -- Of copies of one impression, keep the one the outcomes were logged against.
            -- Only pairs logged twice are ranked: a hash aggregate finds them, the window
            -- then sorts a few rows, not the whole day.
            SELECT impression_id FROM (
                SELECT impression_id, row_number() OVER (PARTITION BY request_id, item_id
                    ORDER BY n_interactions DESC, ts, position, impression_id) AS copy
                FROM _day d WHERE EXISTS (
                    SELECT 1 FROM (SELECT request_id, item_id FROM _day
                                   GROUP BY request_id, item_id HAVING count(*) > 1) r
                    WHERE r.request_id IS NOT DISTINCT FROM d.request_id
                      AND r.item_id IS NOT DISTINCT FROM d.item_id))
            WHERE copy > 1""")

        def remove(reason: str, select: str) -> None:
            counts[reason] = conn.execute(f"""
                INSERT INTO _removed SELECT impression_id, ? FROM ({select}) s
                WHERE impression_id NOT IN (SELECT impression_id FROM _removed)""",
                                          [reason]).fetchone()[0]

        remove(*dedupe)
        # Users are judged on the day without its duplicate copies.
        flagged = flag_bots(conn, partition_date, rules)
        for reason, select in removal_sql(partition_date, rules) if use_filters else []:
            remove(reason, select)
        if use_filters and max_label_issue_share > 0:
            judged = conn.execute(f"""
                SELECT d.* EXCLUDE (extras), d.grade AS label_grade, u.country, u.age_band,
                       u.signup_date, it.category, it.published_date, it.duration_s,
                       it.popularity, it.c0, it.c1, it.c2, it.c3, it.c4, it.c5,
                       {warehouse.merged_extras("u", "it", "d")} AS extras
                FROM _day d
                LEFT JOIN raw.users u ON u.user_key = d.user_key AND u.partition_date = $ud
                LEFT JOIN raw.items it ON it.item_id = d.item_id AND it.partition_date = $id
                WHERE d.n_interactions > 0
                  AND d.impression_id NOT IN (SELECT impression_id FROM _removed)
                -- A fixed row order: cross-validation folds (and so the flags) follow it.
                ORDER BY d.impression_id""", {
                "ud": latest_snapshot_date(conn, "raw.users", partition_date),
                "id": latest_snapshot_date(conn, "raw.items", partition_date)}).df()
            noisy = flag_label_issues(judged, max_label_issue_share,
                                      max_categories=max_categories)
            reason = "label issue (confident learning on out-of-fold predictions)"
            conn.register("_noisy", pd.DataFrame({"impression_id": noisy}, dtype=object))
            counts[reason] = conn.execute("INSERT INTO _removed SELECT impression_id, ? FROM _noisy",
                                          [reason]).fetchall()[0][0]
            conn.unregister("_noisy")
        conn.execute("""INSERT INTO curated.feedback_removals
            SELECT DATE '{d}', impression_id, 'curated_feedback', reason FROM _removed""".format(
            d=partition_date))
        rows = warehouse.replace_partition(conn, "curated.curated_feedback", partition_date, """
            SELECT * FROM _day
            WHERE impression_id NOT IN (SELECT impression_id FROM _removed)""")
        total = conn.execute("SELECT count(*) FROM _day").fetchone()[0]
        for temp in ("_day", "_removed", "_user_features"):
            conn.execute(f"DROP TABLE IF EXISTS {temp}")
    return {"rows": rows, "input_rows": total, "removed": counts, "flagged_users": flagged,
            "filters": "on" if use_filters else "off (dedupe only)"}


def engagement_per_request(conn: duckdb.DuckDBPyConnection, partition_date: str) -> float:
    """Online quality from the logs: the mean over the day's requests (flagged bots left
    out) of the summed grade of the slate. What `quality_sensor` watches."""
    value = conn.execute("""
        SELECT avg(total) FROM (
            SELECT request_id, sum(grade) AS total FROM curated.feedback_events f
            WHERE partition_date = $d AND NOT EXISTS (
                SELECT 1 FROM curated.flagged_users b
                WHERE b.partition_date = f.partition_date AND b.user_key = f.user_key)
            GROUP BY request_id)""", {"d": partition_date}).fetchone()[0]
    return float(value or 0.0)
