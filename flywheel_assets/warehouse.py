"""The DuckDB warehouse: schemas, tables and the one-transaction partition write.

DuckDB takes one writer at a time, so connections stay short, and every partition is
written in one transaction (delete the partition, insert, commit): re-running a
partition is idempotent and a run killed half-way leaves the previous state behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import duckdb

from flywheel_assets.monitor.alerts import ensure_alerts_table

SCHEMAS = ("raw", "curated", "label", "ml", "monitor")

# Every table the product writes. Partitioned tables carry `partition_date`.
TABLES_DDL = """
CREATE TABLE IF NOT EXISTS raw.landing_files (
    partition_date DATE, stream VARCHAR, source_file VARCHAR, format VARCHAR,
    rows_read BIGINT, bytes BIGINT, rows_erased BIGINT);
CREATE TABLE IF NOT EXISTS raw.deletion_requests (
    partition_date DATE, user_key VARCHAR, requested_at TIMESTAMPTZ,
    source_file VARCHAR, source_row BIGINT);
-- The same requests' keys under the pseudonymisation secrets used before the current one
-- (`pseudonym_previous_secrets`): tombstones too.
CREATE TABLE IF NOT EXISTS raw.deletion_request_keys (partition_date DATE, alias_key VARCHAR);
CREATE TABLE IF NOT EXISTS raw.impressions (
    partition_date DATE, impression_id VARCHAR, request_id VARCHAR, ts TIMESTAMPTZ,
    user_key VARCHAR, item_id VARCHAR, position INTEGER, propensity DOUBLE,
    policy_version VARCHAR, device VARCHAR, explored BOOLEAN, source_file VARCHAR,
    source_row BIGINT, extras VARCHAR);
CREATE TABLE IF NOT EXISTS raw.candidates (
    partition_date DATE, request_id VARCHAR, item_id VARCHAR, exposure_propensity DOUBLE,
    source_file VARCHAR, source_row BIGINT, extras VARCHAR, greedy_position INTEGER);
CREATE TABLE IF NOT EXISTS raw.interactions (
    partition_date DATE, event_id VARCHAR, impression_id VARCHAR, ts TIMESTAMPTZ,
    signal VARCHAR, value DOUBLE, source_file VARCHAR, source_row BIGINT, extras VARCHAR);
CREATE TABLE IF NOT EXISTS raw.users (
    partition_date DATE, user_key VARCHAR, country VARCHAR, age_band VARCHAR,
    signup_date DATE, consent_training BOOLEAN, source_file VARCHAR, source_row BIGINT,
    extras VARCHAR);
CREATE TABLE IF NOT EXISTS raw.items (
    partition_date DATE, item_id VARCHAR, category VARCHAR, published_date DATE,
    duration_s DOUBLE, popularity BIGINT, c0 DOUBLE, c1 DOUBLE, c2 DOUBLE, c3 DOUBLE,
    c4 DOUBLE, c5 DOUBLE, source_file VARCHAR, source_row BIGINT, extras VARCHAR);
CREATE TABLE IF NOT EXISTS raw.quarantined_events (
    partition_date DATE, stream VARCHAR, source_file VARCHAR, source_row BIGINT,
    column_name VARCHAR, reason VARCHAR, record VARCHAR);
-- Entries of a landing day that were not read (a name hidden by convention, a symbolic
-- link, a folder, an unknown format, a file that cannot be read): nothing is skipped
-- without a trace, and the blocking check `landing_files_read` fails on any of them.
CREATE TABLE IF NOT EXISTS raw.refused_files (
    partition_date DATE, stream VARCHAR, entry VARCHAR, reason VARCHAR, bytes BIGINT);
CREATE TABLE IF NOT EXISTS curated.feedback_events (
    partition_date DATE, impression_id VARCHAR, request_id VARCHAR, ts TIMESTAMPTZ,
    user_key VARCHAR, item_id VARCHAR, position INTEGER, propensity DOUBLE,
    policy_version VARCHAR, device VARCHAR, explored BOOLEAN, n_interactions INTEGER,
    signals VARCHAR[], grade INTEGER, max_value DOUBLE, first_interaction_ts TIMESTAMPTZ,
    extras VARCHAR);
CREATE TABLE IF NOT EXISTS curated.curated_feedback AS
    SELECT * FROM curated.feedback_events WITH NO DATA;
CREATE TABLE IF NOT EXISTS curated.feedback_removals (
    partition_date DATE, impression_id VARCHAR, stage VARCHAR, reason VARCHAR);
CREATE TABLE IF NOT EXISTS curated.flagged_users (
    partition_date DATE, user_key VARCHAR, reasons VARCHAR, n_requests BIGINT,
    gap_cv DOUBLE, median_reaction_s DOUBLE, n_saves BIGINT, top_item_save_share DOUBLE);
CREATE TABLE IF NOT EXISTS curated.position_bias (
    partition_date DATE, position INTEGER, examination DOUBLE, ci_low DOUBLE,
    ci_high DOUBLE, clicks BIGINT, impressions BIGINT, explored_requests BIGINT,
    window_start DATE, method VARCHAR, draws DOUBLE[]);
CREATE TABLE IF NOT EXISTS curated.user_profiles (
    partition_date DATE, user_key VARCHAR, segment VARCHAR, activity DOUBLE, rate DOUBLE,
    taste DOUBLE[], factors DOUBLE[]);
CREATE TABLE IF NOT EXISTS curated.user_category_affinity (
    partition_date DATE, user_key VARCHAR, segment VARCHAR, category VARCHAR,
    affinity DOUBLE);
CREATE TABLE IF NOT EXISTS curated.item_profiles (
    partition_date DATE, item_id VARCHAR, category VARCHAR, exposure DOUBLE, rate DOUBLE,
    factors DOUBLE[], content_map DOUBLE[]);
CREATE TABLE IF NOT EXISTS curated.item_segment_rates (
    partition_date DATE, item_id VARCHAR, segment VARCHAR, rate DOUBLE);
CREATE TABLE IF NOT EXISTS label.labeling_queue (
    partition_date DATE, task_key VARCHAR, priority INTEGER, reason VARCHAR,
    champion_version VARCHAR, champion_score DOUBLE, champion_rank INTEGER,
    impression_id VARCHAR, request_id VARCHAR, ts TIMESTAMPTZ, user_key VARCHAR,
    item_id VARCHAR, position INTEGER, propensity DOUBLE, device VARCHAR, country VARCHAR,
    age_band VARCHAR, signup_date DATE, category VARCHAR, published_date DATE,
    duration_s DOUBLE, popularity BIGINT, c0 DOUBLE, c1 DOUBLE, c2 DOUBLE, c3 DOUBLE,
    c4 DOUBLE, c5 DOUBLE, n_interactions INTEGER, signals VARCHAR[], implicit_grade INTEGER,
    extras VARCHAR);
CREATE TABLE IF NOT EXISTS label.inbox_files (
    partition_date DATE, source_file VARCHAR, sha256 VARCHAR, format VARCHAR,
    rows_read BIGINT, accepted BIGINT, quarantined BIGINT);
CREATE TABLE IF NOT EXISTS label.annotations (
    partition_date DATE, task_key VARCHAR, annotator VARCHAR, grade INTEGER,
    annotation_id VARCHAR, created_at VARCHAR, source_file VARCHAR, source_row BIGINT);
CREATE TABLE IF NOT EXISTS label.quarantined_labels (
    partition_date DATE, source_file VARCHAR, source_row BIGINT, task_key VARCHAR,
    reason VARCHAR, record VARCHAR);
CREATE TABLE IF NOT EXISTS label.human_labels (
    partition_date DATE, task_key VARCHAR, grade INTEGER, annotations INTEGER,
    unanimous BOOLEAN);
CREATE TABLE IF NOT EXISTS label.gold_set (
    partition_date DATE, version VARCHAR, rank INTEGER, task_key VARCHAR, reason VARCHAR,
    failure BOOLEAN, grade INTEGER, impression_id VARCHAR, request_id VARCHAR,
    user_key VARCHAR, item_id VARCHAR, source_date DATE);
CREATE TABLE IF NOT EXISTS label.audits (
    partition_date DATE, gold_version VARCHAR, champion_version VARCHAR,
    gold_examples BIGINT, human_labels_used BIGINT, champion_auc DOUBLE,
    human_model_auc DOUBLE, difference_low DOUBLE, difference_high DOUBLE,
    verdict VARCHAR);
CREATE TABLE IF NOT EXISTS ml.training_set (
    partition_date DATE, source_date DATE, impression_id VARCHAR, request_id VARCHAR,
    ts TIMESTAMPTZ, user_key VARCHAR, item_id VARCHAR, position INTEGER,
    propensity DOUBLE, device VARCHAR, country VARCHAR, age_band VARCHAR,
    signup_date DATE, category VARCHAR, published_date DATE, duration_s DOUBLE,
    popularity BIGINT, c0 DOUBLE, c1 DOUBLE, c2 DOUBLE, c3 DOUBLE, c4 DOUBLE,
    c5 DOUBLE, n_interactions INTEGER, label_grade INTEGER, weight DOUBLE,
    target DOUBLE, split VARCHAR, extras VARCHAR, human_grade INTEGER);
CREATE TABLE IF NOT EXISTS ml.model_registry (
    version VARCHAR, partition_date DATE, created_at TIMESTAMPTZ, path VARCHAR,
    parent_version VARCHAR, train_rows BIGINT, window_start DATE, window_end DATE,
    card VARCHAR);
CREATE TABLE IF NOT EXISTS ml.model_evaluations (
    partition_date DATE, candidate_version VARCHAR, champion_version VARCHAR,
    holdout_rows BIGINT, holdout_requests BIGINT, metrics VARCHAR,
    report_path VARCHAR, evaluated_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS monitor.check_results (
    partition_date DATE, asset VARCHAR, check_name VARCHAR, passed BOOLEAN,
    description VARCHAR, checked_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS monitor.drift_reports (
    partition_date DATE, served_by VARCHAR, reference_partition DATE, drift_share DOUBLE,
    dataset_drift BOOLEAN, columns VARCHAR, report_path VARCHAR, computed_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS monitor.flywheel_health (
    partition_date DATE, signal_valid BOOLEAN, loop_closed BOOLEAN,
    event_to_champion_hours DOUBLE, quality_trend VARCHAR, details VARCHAR,
    computed_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS ml.gate_decisions (
    partition_date DATE, candidate_version VARCHAR, compared_with VARCHAR,
    in_service VARCHAR, promote BOOLEAN, decision VARCHAR, decided_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS ml.promotions (
    decided_at TIMESTAMPTZ, partition_date DATE, candidate_version VARCHAR,
    previous_champion VARCHAR, new_champion VARCHAR, promoted BOOLEAN,
    actor VARCHAR, reasons VARCHAR,
    -- whether this decision moved the pointer (a re-run's keeps it: not a promotion);
    -- NULL on rows written before the column existed.
    moved BOOLEAN);
"""


def prepare(conn: duckdb.DuckDBPyConnection, temp_dir: Path | None = None,
            memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """Session settings every connection needs: UTC, and where to spill."""
    # Timestamps are stored as TIMESTAMPTZ and always read back in UTC.
    conn.execute("SET TimeZone = 'UTC'")
    if temp_dir is not None:
        temp_dir.mkdir(parents=True, exist_ok=True)
        conn.execute(f"SET temp_directory = '{temp_dir}'")
    if memory_limit:
        conn.execute(f"SET memory_limit = '{memory_limit}'")
    return conn


# Columns added since a table was first created: a warehouse of an earlier version gets
# them (nullable; the columns they replace stay, unused).
ADDED_COLUMNS = {
    "raw.impressions": {"explored": "BOOLEAN", "extras": "VARCHAR"},
    "raw.candidates": {"extras": "VARCHAR", "greedy_position": "INTEGER"},
    "raw.interactions": {"extras": "VARCHAR"},
    "raw.users": {"extras": "VARCHAR"}, "raw.items": {"extras": "VARCHAR"},
    "curated.position_bias": {"draws": "DOUBLE[]"},
    "curated.feedback_events": {"explored": "BOOLEAN", "signals": "VARCHAR[]",
                                "grade": "INTEGER", "extras": "VARCHAR"},
    "curated.curated_feedback": {"explored": "BOOLEAN", "signals": "VARCHAR[]",
                                 "grade": "INTEGER", "extras": "VARCHAR"},
    "ml.training_set": {"extras": "VARCHAR", "human_grade": "INTEGER"},
    "ml.promotions": {"moved": "BOOLEAN"},
}


def create_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the warehouse's schemas and tables if they do not exist yet."""
    for schema in SCHEMAS:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    conn.execute(TABLES_DDL)
    ensure_alerts_table(conn)
    present = set(conn.execute("SELECT table_schema || '.' || table_name || '.' || column_name "
                               "FROM information_schema.columns").fetchall())
    for table, columns in ADDED_COLUMNS.items():
        for column, kind in columns.items():
            if (f"{table}.{column}",) not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        if (f"{table}.signals",) not in present and (f"{table}.has_skip",) in present:
            _backfill_signals(conn, table)


def _backfill_signals(conn: duckdb.DuckDBPyConnection, table: str) -> None:
    """A warehouse of the version with one flag per signal (`has_save` …): its rows get
    the list of signals and the grade of the default vocabulary, once."""
    from flywheel_assets.settings import DEFAULT_GRADES

    flags = [s for s in DEFAULT_GRADES if s != "click"]
    signals = ("list_sort(list_filter([" + ", ".join(f"CASE WHEN has_{s} THEN '{s}' END"
                                                    for s in flags)
               + "], lambda x: x IS NOT NULL))")
    grade = ("greatest(0, " + ", ".join(f"CASE WHEN has_{s} THEN {g} ELSE 0 END"
                                        for s, g in DEFAULT_GRADES.items() if s != "click")
             + ")")
    conn.execute(f"UPDATE {table} SET signals = nullif({signals}, []::VARCHAR[]), "
                 f"grade = {grade}")


# A process that holds the warehouse file read-write excludes every other process,
# readers too. Steps of runs wait their turn in the `duckdb` pool; what runs outside
# the pool (the CLI's operator commands and summaries) waits for the lock instead.
LOCKED = "Could not set lock on file"
OPERATOR_WAIT_SECONDS = 900.0


def operator_connect(path: Path, read_only: bool = False):
    """The warehouse for a command a person runs: waits for a run that holds it, saying
    so on stderr."""
    return connect(path, read_only=read_only, wait_seconds=OPERATOR_WAIT_SECONDS,
                   on_wait=lambda message: print(message, file=sys.stderr, flush=True))


def _open(path: Path, read_only: bool, wait_seconds: float,
          on_wait: Callable[[str], None] | None) -> duckdb.DuckDBPyConnection:
    deadline, told = time.monotonic() + wait_seconds, False
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if LOCKED not in str(exc) or time.monotonic() >= deadline:
                raise
            if on_wait is not None and not told:
                on_wait(f"waiting for the warehouse {path}: another process is writing it "
                        f"(up to {wait_seconds:.0f} s)")
                told = True
            time.sleep(0.5)


@contextlib.contextmanager
def connect(path: Path, temp_dir: Path | None = None, memory_limit: str | None = None,
            read_only: bool = False, wait_seconds: float = 0.0,
            on_wait: Callable[[str], None] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection to the warehouse file, with the schema in place. With
    ``wait_seconds``, a file another process holds is tried again until then (telling
    ``on_wait`` once) rather than refused at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _open(path, read_only, wait_seconds, on_wait)
    try:
        prepare(conn, temp_dir, memory_limit)
        if not read_only:
            create_schema(conn)
        yield conn
    finally:
        conn.close()
        release_memory()


def release_memory() -> None:
    """Hand memory that nothing holds any more back to the system: what Arrow's pool
    (mimalloc) keeps for reuse after DuckDB's results and the readers' batches are
    freed, and the C heap's free pages. Called when a warehouse connection closes, so
    that a step does not leave the next one (in the same process: a run's steps, the
    daemon's) starting from its high-water mark: after ingesting a day, most of what
    the process still held was Arrow's unused pool."""
    try:
        import ctypes

        import pyarrow as pa

        pa.default_memory_pool().release_unused()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except Exception:  # noqa: BLE001 - never hide the error of the step that closes
        pass  # not glibc: its allocator returns memory its own way


@contextlib.contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: commit on success, roll back on any error."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:
        # A commit that failed (a full disk) must not leave the transaction open for
        # the connection's next statement to commit.
        with contextlib.suppress(duckdb.Error):
            conn.execute("ROLLBACK")
        raise


def replace_partition(conn: duckdb.DuckDBPyConnection, table: str, partition_date: str,
                      select_sql: str, params: list | None = None) -> int:
    """Replace one partition of ``table`` with the rows of ``select_sql``.

    Call inside :func:`transaction` so the delete and the insert land together.
    Returns the number of rows inserted.
    """
    conn.execute(f"DELETE FROM {table} WHERE partition_date = ?", [partition_date])
    conn.execute(f"INSERT INTO {table} BY NAME {select_sql}", params or [])
    # fetchall, not fetchone: DuckDB refuses some calls (unregister) while a result is
    # only partly fetched.
    return conn.execute(
        f"SELECT count(*) FROM {table} WHERE partition_date = ?", [partition_date]
    ).fetchall()[0][0]


def replace_rows(conn: duckdb.DuckDBPyConnection, table: str, key: dict, row: dict,
                 own_transaction: bool = True) -> None:
    """Replace the rows of ``table`` matching ``key`` (column → value, e.g. the
    partition) with one ``row`` (column → value), in one transaction (the caller's,
    when ``own_transaction`` is False)."""
    where = " AND ".join(f"{column} = ?" for column in key)
    columns = ", ".join(row)
    with transaction(conn) if own_transaction else contextlib.nullcontext(conn):
        conn.execute(f"DELETE FROM {table} WHERE {where}", list(key.values()))
        conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(row))})",
                     list(row.values()))


def replace_partition_with_frame(conn: duckdb.DuckDBPyConnection, table: str,
                                 partition_date: str, frame) -> int:
    """Replace one partition of ``table`` with the rows of a DataFrame (columns by
    name), in one transaction."""
    with transaction(conn):
        conn.register("_partition_rows", frame)
        try:
            return replace_partition(conn, table, partition_date, "SELECT * FROM _partition_rows")
        finally:
            conn.unregister("_partition_rows")


def merged_extras(*aliases: str) -> str:
    """SQL: the `extras` JSON objects of the rows of the given table aliases merged into
    one (a later alias wins a shared key), NULL when there is none. Landing columns
    beyond the contract, of the user, the item and the request alike."""
    parts = ", ".join(f"coalesce({a}.extras, '{{}}')" for a in aliases)
    return f"nullif(json_merge_patch({parts})::VARCHAR, '{{}}')"


def window_start(partition_date: str, days: int) -> str:
    """First day of a window of ``days`` days ending on ``partition_date``."""
    return (dt.date.fromisoformat(partition_date) - dt.timedelta(days=days - 1)).isoformat()


def record_check(conn: duckdb.DuckDBPyConnection, partition_date: str, asset: str,
                 check_name: str, passed: bool, description: str | None = None,
                 own_transaction: bool = True) -> None:
    """Keep the latest result of a blocking check per partition, so that the promotion
    gate can see it even when it runs in another run than the check."""
    key = {"partition_date": partition_date, "asset": asset, "check_name": check_name}
    replace_rows(conn, "monitor.check_results", key,
                 {**key, "passed": bool(passed), "description": description, "checked_at": now()},
                 own_transaction)


def now() -> dt.datetime:
    """The time stamp every warehouse row is written with (UTC)."""
    return dt.datetime.now(dt.timezone.utc)


def failed_or_missing_checks(conn: duckdb.DuckDBPyConnection, partition_date: str,
                             expected: list[tuple[str, str]]) -> list[str]:
    """Blocking checks of the partition that failed, or that never ran."""
    results = {(a, c): (p, d) for a, c, p, d in conn.execute(
        "SELECT asset, check_name, passed, description FROM monitor.check_results "
        "WHERE partition_date = ?", [partition_date]).fetchall()}
    problems = []
    for asset, check in expected:
        if (asset, check) not in results:
            problems.append(f"{asset}:{check} has not run for {partition_date}")
        elif not results[(asset, check)][0]:
            problems.append(f"{asset}:{check} failed: {results[(asset, check)][1] or 'see the UI'}")
    return problems
