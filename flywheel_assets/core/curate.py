"""Curation in SQL: impressions joined with their outcomes, then cleaned.

Every impression removed on the way is written to ``curated.feedback_removals`` with
its reason, so curated rows + removed rows = input rows, per partition.
"""

from __future__ import annotations

import duckdb

from flywheel_assets.core import warehouse
from flywheel_assets.core.landing_contract import DEFAULT_SIGNALS

_FLAGS = ",\n".join(f"bool_or(signal = '{s}') AS has_{s}" for s in DEFAULT_SIGNALS)
_FLAG_COLUMNS = ", ".join(f"coalesce(e.has_{s}, FALSE) AS has_{s}" for s in DEFAULT_SIGNALS)


def latest_snapshot_date(conn: duckdb.DuckDBPyConnection, table: str, partition_date: str):
    """The newest snapshot partition on or before the day (snapshots may skip days)."""
    return conn.execute(f"SELECT max(partition_date) FROM {table} WHERE partition_date <= ?",
                        [partition_date]).fetchone()[0]


def build_feedback_events(conn: duckdb.DuckDBPyConnection, partition_date: str) -> dict:
    """One row per impression with its outcome flags; users without training consent
    (or absent from every users snapshot) are excluded and counted."""
    users_date = latest_snapshot_date(conn, "raw.users", partition_date)
    with warehouse.transaction(conn):
        conn.execute("DELETE FROM curated.feedback_removals WHERE partition_date = ? "
                     "AND stage = 'feedback_events'", [partition_date])
        conn.execute(f"""
            CREATE OR REPLACE TEMP TABLE _joined AS
            SELECT i.partition_date, i.impression_id, i.request_id, i.ts, i.user_key,
                   i.item_id, i.position, i.propensity, i.policy_version, i.device,
                   coalesce(e.n_interactions, 0) AS n_interactions, {_FLAG_COLUMNS},
                   e.max_value, e.first_interaction_ts,
                   coalesce(u.consent_training, FALSE) AS _consent
            FROM raw.impressions i
            LEFT JOIN (
                -- A replayed event (same impression, signal and time) counts once.
                SELECT impression_id, count(DISTINCT (signal, ts)) AS n_interactions,
                       {_FLAGS}, max(value) AS max_value, min(ts) AS first_interaction_ts
                FROM raw.interactions WHERE partition_date = $d GROUP BY impression_id
            ) e USING (impression_id)
            LEFT JOIN (SELECT user_key, consent_training FROM raw.users
                       WHERE partition_date = $u) u USING (user_key)
            WHERE i.partition_date = $d""", {"d": partition_date, "u": users_date})
        conn.execute("""INSERT INTO curated.feedback_removals
            SELECT partition_date, impression_id, 'feedback_events', 'no training consent'
            FROM _joined WHERE NOT _consent""")
        rows = warehouse.replace_partition(
            conn, "curated.feedback_events", partition_date,
            "SELECT * EXCLUDE (_consent) FROM _joined WHERE _consent")
        stats = conn.execute("""
            SELECT count(*) FILTER (WHERE NOT _consent),
                   count(*) FILTER (WHERE _consent AND n_interactions > 0)
            FROM _joined""").fetchone()
        orphans = conn.execute("""
            SELECT count(*) FROM raw.interactions x WHERE x.partition_date = $d
            AND NOT EXISTS (SELECT 1 FROM raw.impressions i WHERE i.partition_date = $d
                            AND i.impression_id = x.impression_id)""",
                               {"d": partition_date}).fetchone()[0]
        conn.execute("DROP TABLE _joined")
    return {"rows": rows, "excluded_no_consent": stats[0], "with_interactions": stats[1],
            "orphan_interactions": orphans, "users_snapshot": str(users_date)}


def build_curated_feedback(conn: duckdb.DuckDBPyConnection, partition_date: str) -> dict:
    """Remove double-logged impressions (same request and item): the first one stays."""
    with warehouse.transaction(conn):
        conn.execute("DELETE FROM curated.feedback_removals WHERE partition_date = ? "
                     "AND stage = 'curated_feedback'", [partition_date])
        conn.execute("""
            CREATE OR REPLACE TEMP TABLE _ranked AS
            SELECT *, row_number() OVER (PARTITION BY request_id, item_id
                                         ORDER BY ts, position, impression_id) AS _copy
            FROM curated.feedback_events WHERE partition_date = ?""", [partition_date])
        conn.execute("""INSERT INTO curated.feedback_removals
            SELECT partition_date, impression_id, 'curated_feedback',
                   'duplicate impression of the same request and item'
            FROM _ranked WHERE _copy > 1""")
        rows = warehouse.replace_partition(conn, "curated.curated_feedback", partition_date,
                                           "SELECT * EXCLUDE (_copy) FROM _ranked WHERE _copy = 1")
        removed = conn.execute("SELECT count(*) FROM _ranked WHERE _copy > 1").fetchone()[0]
        conn.execute("DROP TABLE _ranked")
    return {"rows": rows, "removed_duplicates": removed}
