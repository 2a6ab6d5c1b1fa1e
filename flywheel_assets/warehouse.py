"""The DuckDB warehouse: schemas, tables and the one-transaction partition write.

DuckDB takes one writer at a time, so connections stay short, and every partition is
written in one transaction (delete the partition, insert, commit): re-running a
partition is idempotent and a run killed half-way leaves the previous state behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

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
    if on_lake(conn):
        # A lake keeps each day of an event table in files of its own: a day is written,
        # replaced and read without touching the files of another day (DuckLake still
        # sees conflicts per table: two writers that both delete from one table, even
        # different days, conflict and one is tried again). Asked of the catalog, so a
        # table left unpartitioned by a creation that lost a race is partitioned by the
        # next connection.
        columns = _columns(conn)
        for table in sorted(table_names(conn) - _partitioned(conn)):
            if (f"{table}.partition_date",) in columns:
                conn.execute(f"ALTER TABLE {table} SET PARTITIONED BY (partition_date)")
    present = _columns(conn)
    for table, columns in ADDED_COLUMNS.items():
        for column, kind in columns.items():
            if (f"{table}.{column}",) not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        if (f"{table}.signals",) not in present and (f"{table}.has_skip",) in present:
            _backfill_signals(conn, table)


def _columns(conn: duckdb.DuckDBPyConnection) -> set[tuple[str]]:
    """``schema.table.column`` of every column of the warehouse."""
    return set(conn.execute("SELECT table_schema || '.' || table_name || '.' || column_name "
                            "FROM information_schema.columns "
                            "WHERE table_catalog = current_database()").fetchall())


def table_names(conn: duckdb.DuckDBPyConnection) -> set[str]:
    """``schema.table`` of every table of the warehouse."""
    return {f"{s}.{t}" for s, t in conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_type = 'BASE TABLE'").fetchall()}


def _partitioned(conn: duckdb.DuckDBPyConnection) -> set[str]:
    """The lake's tables that have a partitioning (DuckLake's catalog says)."""
    meta = f"__ducklake_metadata_{LAKE_ALIAS}"
    return {r[0] for r in conn.execute(f"""
        SELECT s.schema_name || '.' || t.table_name FROM {meta}.ducklake_table t
        JOIN {meta}.ducklake_schema s ON s.schema_id = t.schema_id AND s.end_snapshot IS NULL
        JOIN {meta}.ducklake_partition_info p ON p.table_id = t.table_id
             AND p.end_snapshot IS NULL
        WHERE t.end_snapshot IS NULL""").fetchall()}


def on_lake(conn: duckdb.DuckDBPyConnection) -> bool:
    """Whether ``conn`` works on a lake (DuckLake), not on the DuckDB file."""
    return conn.execute("SELECT type FROM duckdb_databases() "
                        "WHERE database_name = current_database()").fetchone()[0] == "ducklake"


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


@dataclass(frozen=True)
class Lake:
    """A warehouse that many processes, on many machines, write at once: DuckLake, its
    catalog in a database that takes concurrent writers and its tables as Parquet files
    under ``data_path`` (a folder, ``file://`` or ``s3://``; see docs/architecture.md
    "Beyond one machine").

    ``catalog`` is what follows ``ducklake:`` in DuckDB's ATTACH: ``postgres:dbname=...
    host=... user=... password=...`` (a PostgreSQL server: writers on any machine),
    ``sqlite:/path/catalog.sqlite`` (processes of one machine) or a ``.ducklake`` file
    (one process). ``s3`` holds the object store's settings when ``data_path`` is on
    one (endpoint, keys, region)."""

    catalog: str = field(repr=False)  # holds the catalog database's password
    data_path: str = ""
    s3: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def __str__(self) -> str:  # never the password
        kind = self.catalog.split(":", 1)[0] if ":" in self.catalog else "file"
        return f"DuckLake ({kind} catalog, data in {self.data_path})"


# DuckLake and the extensions it needs come as Python packages built for the DuckDB
# they name (duckdb-extension-ducklake …): no download at run time.
LAKE_EXTENSIONS = {"ducklake": "duckdb_extension_ducklake",
                   "postgres_scanner": "duckdb_extension_postgres_scanner",
                   "sqlite_scanner": "duckdb_extension_sqlite_scanner",
                   "httpfs": "duckdb_extension_httpfs"}
LAKE_ALIAS = "warehouse"


def load_extension(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """Load a DuckDB extension from its Python package (see LAKE_EXTENSIONS)."""
    import importlib

    try:
        package = importlib.import_module(LAKE_EXTENSIONS[name])
    except ImportError:
        raise RuntimeError(f"the warehouse needs DuckDB's {name} extension: pip install "
                           f"'flywheel[deploy]' (package {LAKE_EXTENSIONS[name]})") from None
    folder = Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}"
    found = sorted(folder.glob("*.duckdb_extension"))
    if not found:
        raise RuntimeError(f"{LAKE_EXTENSIONS[name]} has no build for DuckDB "
                           f"{duckdb.__version__} (looked in {folder}); install the "
                           f"package of the same version as duckdb")
    conn.execute(f"LOAD '{found[0]}'")


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_SECRETS = (re.compile(r"(password\s*=\s*)('[^']*'|[^\s\"']+)", re.I),
            re.compile(r"(SECRET\s+)('[^']*'|[^\s\"']+)"),
            re.compile(r"(://[^:/@\s]+:)([^@\s]+)(?=@)"))


def scrub(text: str) -> str:
    """``text`` without the passwords a catalog string, an S3 secret or a URL carry
    (DuckDB quotes the catalog string whole in an error that names it)."""
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: m.group(1) + "***", text)
    return text


def _scrubbed(error: duckdb.Error) -> duckdb.Error:
    """The same error with its message scrubbed (its cause, which holds the password,
    not chained)."""
    try:
        return type(error)(scrub(str(error)))
    except TypeError:  # an error class that takes other arguments
        return duckdb.Error(scrub(str(error)))


def _open_lake(lake: Lake, read_only: bool) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    try:
        load_extension(conn, "ducklake")
        kind = lake.catalog.split(":", 1)[0]
        if kind in ("postgres", "sqlite"):
            load_extension(conn, {"postgres": "postgres_scanner", "sqlite": "sqlite_scanner"}[kind])
        if lake.data_path.startswith("s3://"):
            load_extension(conn, "httpfs")
            options = ", ".join(f"{key} {_sql_text(value)}" for key, value in lake.s3)
            conn.execute(f"CREATE SECRET flywheel_s3 (TYPE s3{', ' if options else ''}{options})")
        options = [f"DATA_PATH {_sql_text(lake.data_path)}"] + (["READ_ONLY"] if read_only else [])
        conn.execute(f"ATTACH {_sql_text('ducklake:' + lake.catalog)} AS {LAKE_ALIAS} "
                     f"({', '.join(options)})")
        conn.execute(f"USE {LAKE_ALIAS}")
        return conn
    except duckdb.Error as exc:
        conn.close()
        raise _scrubbed(exc) from None
    except BaseException:
        conn.close()
        raise


def _open(path: Path | Lake, read_only: bool, wait_seconds: float,
          on_wait: Callable[[str], None] | None) -> duckdb.DuckDBPyConnection:
    if isinstance(path, Lake):
        return _open_lake(path, read_only)
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
def connect(path: Path | Lake, temp_dir: Path | None = None, memory_limit: str | None = None,
            read_only: bool = False, wait_seconds: float = 0.0,
            on_wait: Callable[[str], None] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection to the warehouse (its DuckDB file, or a :class:`Lake`),
    with the schema in place. With ``wait_seconds``, a file another process holds is
    tried again until then (telling ``on_wait`` once) rather than refused at once; a
    lake takes many writers and never waits."""
    if not isinstance(path, Lake):
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = _open(path, read_only, wait_seconds, on_wait)
    try:
        prepare(conn, temp_dir, memory_limit)
        if not read_only:
            # Writers that start together on a new lake race to create its tables.
            retry_races(lambda: create_schema(conn), conn if isinstance(path, Lake) else None)
        yield conn
    except duckdb.Error as exc:
        # A lake's catalog that stops answering is named whole, password included.
        if isinstance(path, Lake) and scrub(str(exc)) != str(exc):
            raise _scrubbed(exc) from None
        raise
    finally:
        conn.close()
        release_memory()


# A lake's writers do not wait for each other: a commit that conflicts with one another
# writer made since this transaction began (both deleted from a table, or one inserted
# into a table the other deleted from) fails, and is tried again from the start.
RACE_RETRIES = 8
RACE_MARKERS = ("Transaction conflict", "Failed to commit DuckLake transaction",
                "database is locked", "could not serialize access")


def lost_a_race(error: BaseException) -> bool:
    """Whether ``error`` is a lake commit that lost to another writer (try it again)."""
    return isinstance(error, duckdb.Error) and any(m in str(error) for m in RACE_MARKERS)


def race_wait(attempt: int = 0) -> float:
    """Seconds before another try: growing, and jittered so that two writers that
    collided do not collide again."""
    import random

    return min(10.0, 0.2 * 2 ** attempt) * (0.5 + random.random())


def retry_races(work: Callable[[], object], conn: duckdb.DuckDBPyConnection | None):
    """``work()``, tried again while it loses a lake commit race (``conn`` None: no lake,
    once). ``work`` must be all-or-nothing: a transaction, or statements that may run
    again."""
    for attempt in range(RACE_RETRIES + 1):
        try:
            return work()
        except duckdb.Error as exc:
            if conn is None or not lost_a_race(exc) or attempt == RACE_RETRIES:
                raise
            with contextlib.suppress(duckdb.Error):
                conn.execute("ROLLBACK")
            time.sleep(race_wait(attempt))


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


def _comparable(column: str, kind: str) -> str:
    """SQL: ``column`` as `table_rows` compares it: decimals written in JSON text cut
    to ten places (they carry sums whose last bits vary, see `same_rows`)."""
    quoted = f'"{column}"'
    if kind == "VARCHAR":
        return f"regexp_replace({quoted}, '(\\.\\d{{10}})\\d+', '\\1', 'g') AS {quoted}"
    return quoted


def _shaped(conn: duckdb.DuckDBPyConnection, table: str, replace: Mapping[str, str] | None,
            leave_out: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """The SELECT list that shapes ``table``'s rows for comparing (see `table_rows`), and
    the type of each column it keeps."""
    schema, name = table.split(".")
    columns = [(c, kind) for c, kind in conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_catalog "
        "= current_database() AND table_schema = ? AND table_name = ? "
        "ORDER BY ordinal_position", [schema, name]).fetchall()
        if not c.endswith("_at") and c not in leave_out]
    listed = []
    for column, kind in columns:
        expression = _comparable(column, kind)
        if kind == "VARCHAR":
            for old, new in (replace or {}).items():
                expression = expression.replace(
                    f'"{column}"', f'replace("{column}", {_sql_text(old)}, {_sql_text(new)})', 1)
        listed.append(expression)
    return ", ".join(listed), dict(columns)


def table_rows(conn: duckdb.DuckDBPyConnection, table: str,
               replace: Mapping[str, str] | None = None,
               leave_out: tuple[str, ...] = ("run_id",)):
    """The rows of ``table`` as a DataFrame to compare with another warehouse's:
    columns named ``*_at`` (when a row was written) and ``leave_out`` (which run wrote
    it) left out, each text of ``replace`` (a data dir) replaced."""
    listed, types = _shaped(conn, table, replace, leave_out)
    frame = conn.execute(f"SELECT {listed} FROM {table}").df()
    frame.attrs["types"] = types
    return frame


def same_rows(a, b, rtol: float = 1e-9) -> str | None:
    """Why two tables' rows (`table_rows`) differ, or None when they are the same rows.
    Numbers are equal within ``rtol`` of the column's largest value: DuckDB sums
    floating-point numbers in parallel, in no fixed order, so the last bits of a sum
    differ between two runs of the same query on the same file (seen in the profiles,
    and further up near zero after the factorisation that follows).
    Everything else must be equal, row for row."""
    import numpy as np

    if list(a.columns) != list(b.columns):
        return f"columns {list(a.columns)} != {list(b.columns)}"
    if len(a) != len(b):
        return f"{len(a)} rows != {len(b)} rows"
    if not len(a):
        return None
    types = {**b.attrs.get("types", {}), **a.attrs.get("types", {})}

    def is_number(series) -> bool:
        return series.dtype.kind == "f" or types.get(series.name) in ("DOUBLE", "FLOAT", "REAL")

    def is_number_list(series) -> bool:
        if series.name in types:
            return types[series.name] in ("DOUBLE[]", "FLOAT[]", "REAL[]")
        first = next((v for v in series if not _null(v)), None)
        return (series.dtype == object and first is not None and not isinstance(first, str)
                and hasattr(first, "__len__") and len(first) > 0
                and all(isinstance(x, float) for x in first))

    exact = [c for c in a.columns if not is_number(a[c]) and not is_number_list(a[c])]
    def ordered(frame):
        keys = frame[exact].map(_text) if exact else frame.iloc[:, :0]
        numbers = [frame[c].round(6) for c in frame.columns if is_number(frame[c])]
        key = keys.assign(**{f"_n{i}": n for i, n in enumerate(numbers)})
        return frame.loc[key.sort_values(list(key.columns)).index].reset_index(drop=True)
    a, b = ordered(a), ordered(b)
    for column in a.columns:
        x, y = a[column], b[column]
        if column in exact:
            differ = (x.map(_text) != y.map(_text)).to_numpy(bool)
            if differ.any():
                i = int(np.argmax(differ))
                return f"{column}: {x.iloc[i]!r} != {y.iloc[i]!r}"
            continue
        if is_number(x):
            left, right = x.to_numpy(float), y.to_numpy(float)
        else:
            def shape(v) -> int:
                return -1 if _null(v) else len(v) if hasattr(v, "__len__") else -2
            if [shape(v) for v in x] != [shape(v) for v in y]:
                return f"{column}: lists of other lengths"
            left = np.concatenate([np.asarray(v, float) for v in x if not _null(v)] or [[]])
            right = np.concatenate([np.asarray(v, float) for v in y if not _null(v)] or [[]])
        finite = np.abs(left[np.isfinite(left)])
        scale = finite.max() if finite.size else 0.0
        close = np.isclose(left, right, rtol=rtol, atol=rtol * scale, equal_nan=True)
        if not close.all():
            i = int(np.argmin(close))
            return f"{column}: {float(left[i])!r} != {float(right[i])!r}"
    return None


def _null(value) -> bool:
    """None, NaN, NA or NaT (not a list, which may hold them)."""
    import pandas as pd

    return value is None or (not hasattr(value, "__len__") and bool(pd.isna(value)))


def _text(value) -> str:
    """A value as text, the same for equal values of any kind (None, NaN and NA alike)."""
    if _null(value):
        return "<null>"
    if hasattr(value, "tolist"):
        value = value.tolist()
    return repr(value)


def compare(conn_a: duckdb.DuckDBPyConnection, conn_b: duckdb.DuckDBPyConnection,
            replace_a: Mapping[str, str] | None = None,
            replace_b: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each table of two warehouses whose rows differ (`same_rows`), with why: empty when
    they hold the same data (a lake and the file it replaced; a backfill run in
    parallel and the same days one after another)."""
    tables_a, tables_b = table_names(conn_a), table_names(conn_b)
    problems = {t: "only in the first" for t in tables_a - tables_b}
    problems.update({t: "only in the second" for t in tables_b - tables_a})
    for table in sorted(tables_a & tables_b):
        # Most tables hold the very same bytes: a digest of the sorted rows says so in
        # the database; the rows come to pandas only when it does not.
        if _digest(conn_a, table, replace_a) == _digest(conn_b, table, replace_b):
            continue
        why = same_rows(table_rows(conn_a, table, replace_a), table_rows(conn_b, table, replace_b))
        if why:
            problems[table] = why
    return problems


def _digest(conn: duckdb.DuckDBPyConnection, table: str,
            replace: Mapping[str, str] | None) -> tuple:
    """Rows and an md5 of the sorted rows of ``table`` as `table_rows` shapes them."""
    listed, _ = _shaped(conn, table, replace, ("run_id",))
    return tuple(conn.execute(
        f"SELECT count(*), md5(coalesce(string_agg(r, '|' ORDER BY r), '')) FROM "
        f"(SELECT CAST(t AS VARCHAR) AS r FROM (SELECT {listed} FROM {table}) t)").fetchone())


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
