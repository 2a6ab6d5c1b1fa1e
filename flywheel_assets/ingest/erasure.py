"""Erase users who asked for it from every table of the warehouse.

Tables are found by their columns, not listed: every table with a ``user_key`` column,
every table keyed by ``impression_id`` (the deleted users' impressions) or only by
``request_id`` (their requests' candidate pools), and the
quarantine's records. A table added later is covered without touching this module.
``raw.deletion_requests`` keeps the keyed hashes: it is the tombstone list that stops
those users from coming back on re-ingestion.
"""

from __future__ import annotations

import duckdb

from flywheel_assets import warehouse

TOMBSTONES = "raw.deletion_requests"
# A request's key under the current secret, and under each secret used before it.
TOMBSTONE_KEYS = (f"(SELECT user_key FROM {TOMBSTONES} UNION ALL "
                  "SELECT alias_key FROM raw.deletion_request_keys)")


def _tables_with(conn: duckdb.DuckDBPyConnection, column: str) -> list[str]:
    rows = conn.execute("""
        SELECT table_schema || '.' || table_name FROM information_schema.columns
        WHERE column_name = ? AND table_schema IN ('raw', 'curated', 'label', 'ml', 'monitor')
        ORDER BY 1""", [column]).fetchall()
    return [r[0] for r in rows if r[0] != TOMBSTONES]


def _delete(conn: duckdb.DuckDBPyConnection, table: str, condition: str,
            landing_rows: set[str]) -> int:
    """Delete matching rows; rows that came from a landing file are added to that
    file's ``rows_erased``, so the day's read = accepted + quarantined + erased holds."""
    if table in landing_rows:
        conn.execute(f"""
            UPDATE raw.landing_files SET rows_erased = rows_erased + gone.n
            FROM (SELECT partition_date, source_file, count(*) AS n FROM {table}
                  WHERE {condition} GROUP BY ALL) gone
            WHERE raw.landing_files.partition_date = gone.partition_date
              AND raw.landing_files.source_file = gone.source_file""")
    return conn.execute(f"DELETE FROM {table} WHERE {condition}").fetchall()[0][0]


def erase_deleted_users(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Delete every row that belongs to a tombstoned user; rows erased per table."""
    erased: dict[str, int] = {}
    keyed = _tables_with(conn, "user_key")
    with_impressions = _tables_with(conn, "impression_id")
    by_impression = [t for t in with_impressions if t not in keyed]
    by_request = [t for t in _tables_with(conn, "request_id")
                  if t not in keyed and t not in with_impressions]
    landing_rows = set(_tables_with(conn, "source_file")) - {"raw.landing_files"}
    gone = "impression_id IN (SELECT impression_id FROM _gone_impressions)"
    with warehouse.transaction(conn):
        conn.execute("CREATE OR REPLACE TEMP TABLE _gone_impressions AS " + " UNION ".join(
            f"SELECT impression_id FROM {t} WHERE user_key IN {TOMBSTONE_KEYS}"
            for t in keyed if t in with_impressions))
        for table in by_request:
            erased[table] = _delete(conn, table, "request_id IN (SELECT request_id FROM "
                                    "raw.impressions WHERE user_key IN "
                                    f"{TOMBSTONE_KEYS})", landing_rows)
        for table in by_impression:
            erased[table] = _delete(conn, table, gone, landing_rows)
        erased["raw.quarantined_events"] = _delete(conn, "raw.quarantined_events", f"""
            json_extract_string(record, '$.user_key') IN {TOMBSTONE_KEYS}
            OR json_extract_string(record, '$.impression_id') IN
               (SELECT impression_id FROM _gone_impressions)""", landing_rows)
        # People's labels of the user's examples (keyed by task, not user), and
        # quarantined label rows that carry the user's key in their record.
        tasks = f"task_key IN (SELECT task_key FROM label.labeling_queue WHERE user_key IN {TOMBSTONE_KEYS})"
        for table in ("label.annotations", "label.human_labels"):
            erased[table] = _delete(conn, table, tasks, landing_rows)
        erased["label.quarantined_labels"] = _delete(conn, "label.quarantined_labels", f"""
            {tasks} OR EXISTS (SELECT 1 FROM {TOMBSTONE_KEYS} d(user_key)
                               WHERE contains(label.quarantined_labels.record, d.user_key))""",
                                                     landing_rows)
        for table in keyed:
            erased[table] = _delete(conn, table, f"user_key IN {TOMBSTONE_KEYS}", landing_rows)
        conn.execute("DROP TABLE _gone_impressions")
    return erased


def tombstone_count(conn: duckdb.DuckDBPyConnection) -> int:
    return conn.execute(f"SELECT count(DISTINCT user_key) FROM {TOMBSTONES}").fetchone()[0]
