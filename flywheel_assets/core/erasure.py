"""Erase users who asked for it from every table of the warehouse.

Tables are found by their columns, not listed: every table with a ``user_key`` column,
every table keyed by ``impression_id`` (the deleted users' impressions), and the
quarantine's records. A table added later is covered without touching this module.
``raw.deletion_requests`` keeps the keyed hashes: it is the tombstone list that stops
those users from coming back on re-ingestion.
"""

from __future__ import annotations

import duckdb

from flywheel_assets.core import warehouse

TOMBSTONES = "raw.deletion_requests"
TOMBSTONE_KEYS = f"(SELECT user_key FROM {TOMBSTONES})"


def _tables_with(conn: duckdb.DuckDBPyConnection, column: str) -> list[str]:
    rows = conn.execute("""
        SELECT table_schema || '.' || table_name FROM information_schema.columns
        WHERE column_name = ? AND table_schema IN ('raw', 'curated', 'ml', 'monitor')
        ORDER BY 1""", [column]).fetchall()
    return [r[0] for r in rows if r[0] != TOMBSTONES]


def erase_deleted_users(conn: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Delete every row that belongs to a tombstoned user; rows erased per table."""
    erased: dict[str, int] = {}
    keyed = _tables_with(conn, "user_key")
    by_impression = [t for t in _tables_with(conn, "impression_id") if t not in keyed]
    with warehouse.transaction(conn):
        conn.execute("CREATE OR REPLACE TEMP TABLE _gone_impressions AS " + " UNION ".join(
            f"SELECT impression_id FROM {t} WHERE user_key IN {TOMBSTONE_KEYS}"
            for t in keyed if t in _tables_with(conn, "impression_id")))
        for table in by_impression:
            erased[table] = conn.execute(
                f"DELETE FROM {table} WHERE impression_id IN "
                f"(SELECT impression_id FROM _gone_impressions)").fetchone()[0]
        erased["raw.quarantined_events"] = conn.execute(f"""
            DELETE FROM raw.quarantined_events
            WHERE json_extract_string(record, '$.user_key') IN {TOMBSTONE_KEYS}
               OR json_extract_string(record, '$.impression_id') IN
                  (SELECT impression_id FROM _gone_impressions)""").fetchone()[0]
        for table in keyed:
            erased[table] = conn.execute(
                f"DELETE FROM {table} WHERE user_key IN {TOMBSTONE_KEYS}").fetchone()[0]
        conn.execute("DROP TABLE _gone_impressions")
    return erased


def tombstone_count(conn: duckdb.DuckDBPyConnection) -> int:
    return conn.execute(f"SELECT count(DISTINCT user_key) FROM {TOMBSTONES}").fetchone()[0]
