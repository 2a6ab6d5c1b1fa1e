"""Landing day → typed raw tables + quarantine, in one DuckDB transaction.

Rows read = rows accepted + rows quarantined + rows erased, for every file, by
construction: each staged row goes to exactly one of the two tables, unless it belongs
to a user who asked for erasure. User ids are replaced by a keyed hash while the rows
are still in a temporary table, before anything is stored.

Every entry of a landing day's folder is read or refused with its reason
(`raw.refused_files`): a name hidden by convention, a symbolic link, a folder, an
unknown format, a file that cannot be read. The rest of the day is ingested, and the
check `landing_files_read` fails, naming each refused entry (it holds the day's
promotion; it does not stop the run). Only the marker
and what a writer's commit protocol leaves beside its files (`_SUCCESS`, `_temporary`,
`_committed_*`, `_started_*`, `*.crc`) are passed over.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from flywheel_assets import warehouse
from flywheel_assets.ingest.erasure import TOMBSTONE_KEYS
from flywheel_assets.ingest.contract import StreamContract, quote_ident, rejection_sql, typed_expr
from flywheel_assets.ingest.pseudonymise import key_map
from flywheel_assets.ingest.reader import (LandingFileError, file_format, identifier_key,
                                           read_landing_file)
from flywheel_assets.reporting import markdown_table

SUCCESS_MARKER = "_SUCCESS"
# What a writer's commit protocol leaves beside its data files (Hadoop, Spark): no rows.
WRITER_METADATA = (SUCCESS_MARKER, "_temporary")
WRITER_METADATA_PREFIXES = ("_committed_", "_started_")
WRITER_METADATA_SUFFIXES = (".crc",)


class LandingIncomplete(RuntimeError):
    """A landing day without its _SUCCESS marker: the product has not finished it."""


@dataclass
class StreamReport:
    stream: str
    files: list[dict] = field(default_factory=list)
    rows_read: int = 0
    accepted: int = 0
    quarantined: int = 0
    erased: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    # Entries of the day's folder not read: {"entry", "reason", "bytes"}.
    refused: list[dict] = field(default_factory=list)
    # Columns whose name differs from a contract field's only by case or punctuation
    # (`Device` for `device`): not read as the field, kept in `extras`. {column: field}
    lookalike_columns: dict[str, str] = field(default_factory=dict)

    @property
    def quarantine_share(self) -> float:
        return self.quarantined / self.rows_read if self.rows_read else 0.0


def partition_dir(landing_dir: Path, stream: str, partition_date: str) -> Path:
    return landing_dir / stream / f"date={partition_date}"


def _writer_metadata(path: Path) -> bool:
    name = path.name
    return not path.is_symlink() and (
        name in WRITER_METADATA or name.startswith(WRITER_METADATA_PREFIXES)
        or name.endswith(WRITER_METADATA_SUFFIXES))


def _size(path: Path) -> int | None:
    try:
        return path.lstat().st_size  # a link's own size: what it points at is not read
    except OSError:
        return None


def _why_unreadable(exc: LandingFileError, path: Path) -> str:
    """The reader's message without the path it starts with (the entry is named apart)."""
    return str(exc).replace(f"{path}: ", "")


def _refusal(path: Path) -> str | None:
    """Why an entry of a landing day is not read (None: it is read)."""
    if path.is_symlink():
        return (f"a symbolic link (to {os.readlink(path)}): landing files must be regular "
                "files in the landing folder, and what a link points at is not read")
    if path.is_dir():
        return "a folder inside the landing day: what it holds is not read"
    if not path.is_file():
        return "not a regular file (a pipe, socket or device)"
    if path.name.startswith((".", "_")):
        return ("the name starts with '.' or '_' (hidden or temporary by convention): "
                "rename it if it holds the day's rows, remove it if not")
    try:
        file_format(path)
    except LandingFileError as exc:
        return _why_unreadable(exc, path)
    return None


def scan_landing_day(landing_dir: Path, stream: str,
                     partition_date: str) -> tuple[list[Path], list[dict]]:
    """The day's files of ``stream`` to read, and the entries refused with their reason
    (paths relative to ``landing_dir``). A day folder, or stream folder, that is a link
    to somewhere outside the landing folder is refused whole."""
    folder = partition_dir(landing_dir, stream, partition_date)
    rel = str(folder.relative_to(landing_dir))
    if folder.is_symlink():
        # Even to another day inside the landing folder: its files would be two days'.
        return [], [{"entry": rel, "bytes": None, "reason": (
            f"the day's folder is a symbolic link (to {os.readlink(folder)}): nothing in "
            "it is read; a day's files must be in its own folder")}]
    if not folder.is_dir():
        return [], []
    root = landing_dir.resolve()
    if not folder.resolve().is_relative_to(root):
        return [], [{"entry": rel, "bytes": None, "reason": (
            f"the day's folder leads outside the landing folder (to {folder.resolve()}) "
            "through a symbolic link: nothing in it is read")}]
    files, refused = [], []
    for path in sorted(folder.iterdir()):
        if _writer_metadata(path):
            continue
        reason = _refusal(path)
        if reason is None:
            files.append(path)
        else:
            refused.append({"entry": str(path.relative_to(landing_dir)), "reason": reason,
                            "bytes": _size(path)})
    return files, refused


def is_day_complete(landing_dir: Path, stream: str, partition_date: str) -> bool:
    return (partition_dir(landing_dir, stream, partition_date) / SUCCESS_MARKER).exists()


# Staged rows whose other fields are looked at for columns named like a contract field.
LOOKALIKE_SAMPLE_ROWS = 100_000


def _lookalike_columns(conn: duckdb.DuckDBPyConnection, contract: StreamContract) -> dict[str, str]:
    """Other fields (on a sample of the staged rows) whose name matches a contract
    field's but for case and punctuation: a client that sends `Device` means `device`,
    but the contract reads names as they are, so the product says so."""
    fields = {identifier_key(f.name): f.name for f in contract.fields}
    keys = conn.execute(
        # TRY: Python writes JSON DuckDB may refuse (a lone surrogate escape); such a
        # row's names are not looked at, and the day goes on.
        f"SELECT DISTINCT unnest(TRY(json_keys(_extras))) FROM (SELECT _extras FROM "
        f"{staged_table(contract)} WHERE _extras IS NOT NULL) USING SAMPLE "
        f"reservoir({LOOKALIKE_SAMPLE_ROWS} ROWS) REPEATABLE (1)").fetchall()
    return {k: fields[identifier_key(k)] for (k,) in sorted(keys)
            if identifier_key(k) in fields and k != fields[identifier_key(k)]}


# The longest value a quarantined record keeps (each field; longer ones are cut).
QUARANTINE_VALUE_CHARS = 4_096

# Staged rows commit every this many: appended rows wait in memory, outside DuckDB's
# limit, until their transaction commits (one commit per batch is slower to stage).
STAGE_COMMIT_ROWS = 1_000_000


def staged_table(contract: StreamContract) -> str:
    """The temporary table a stream's rows are staged in (quoted)."""
    return quote_ident(f"_stage_{contract.stream}")


def _stage(conn: duckdb.DuckDBPyConnection, contract: StreamContract, files: list[Path],
           landing_dir: Path, report: StreamReport, dropped: frozenset) -> None:
    """`_stage_<stream>`: every row of the stream's files as text, with its file and row
    number. Staged before the ingest's transaction opens, committing every
    `STAGE_COMMIT_ROWS`: rows appended to a temporary table inside a transaction are
    held in memory, outside DuckDB's limit, until it commits.

    Ids and strings are trimmed (blank = missing) as they are staged, before they are
    hashed, compared for duplicates or matched against tombstones: ' user_1' is
    'user_1'. Nothing is updated in place afterwards: every later step reads the staged
    rows and writes a new table, so the transaction holds no versions of the whole day.
    """
    cols = contract.names
    col_defs = ", ".join(f"{quote_ident(c)} VARCHAR" for c in cols)
    stage = staged_table(contract)
    conn.execute(f"CREATE OR REPLACE TEMP TABLE {stage} ({col_defs}, _file VARCHAR, "
                 f"_row BIGINT, _parse_error VARCHAR, _extras VARCHAR)")
    text = {f.name for f in contract.fields if f.kind in ("id", "string")}
    values = ", ".join(f"nullif(trim({quote_ident(c)}), '')" if c in text else quote_ident(c)
                       for c in cols)
    # JSON Lines are parsed by DuckDB on a connection of their own, held to this one's limit.
    memory_limit = conn.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    uncommitted, open_transaction = 0, True
    conn.execute("BEGIN TRANSACTION")
    try:
        for path in files:
            rel = str(path.relative_to(landing_dir))
            n = 0
            try:
                for batch in read_landing_file(path, cols, dropped, memory_limit):
                    conn.register("_batch", batch)
                    conn.execute(f"INSERT INTO {stage} SELECT {values}, ?, _row, "
                                 "_parse_error, _extras FROM _batch", [rel])
                    conn.unregister("_batch")
                    n += batch.num_rows
                    uncommitted += batch.num_rows
                    if uncommitted >= STAGE_COMMIT_ROWS:
                        open_transaction = False  # a failed COMMIT has rolled back already
                        conn.execute("COMMIT")
                        conn.execute("BEGIN TRANSACTION")
                        uncommitted, open_transaction = 0, True
            except LandingFileError as exc:
                # A file that cannot be read (truncated, corrupt, not its format) is
                # refused whole, the rows it gave so far with it; the others are read.
                conn.execute(f"DELETE FROM {stage} WHERE _file = ?", [rel])
                report.refused.append({"entry": rel, "bytes": _size(path),
                                       "reason": _why_unreadable(exc, path)})
                continue
            report.files.append({"file": rel, "format": file_format(path), "rows": n,
                                 "bytes": path.stat().st_size})
            report.rows_read += n
    except BaseException:
        if open_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    # The batches are in DuckDB now: what Arrow's pool kept of them goes back.
    warehouse.release_memory()


def _pseudonymised(conn: duckdb.DuckDBPyConnection, contract: StreamContract,
                   secret: str, previous_secrets: tuple[str, ...] = ()) -> str:
    """The staged rows with each pseudonymised field replaced by its keyed hash, as a
    relation (SQL text): the distinct ids are hashed in Python (HMAC), joined back by
    DuckDB. `_keys_<i>` also holds each id's keys under ``previous_secrets`` (``old``),
    which erasure matches against the tombstones."""
    stage = staged_table(contract)
    replaced, joins = [], []
    for i, f in enumerate(contract.fields):
        if not f.pseudonymise:
            continue
        col, keys = quote_ident(f.name), f"_keys_{i}"
        ids = [r[0] for r in conn.execute(
            f"SELECT DISTINCT {col} FROM {stage} WHERE {col} IS NOT NULL").fetchall()]
        conn.execute(f"CREATE OR REPLACE TEMP TABLE {keys} (raw VARCHAR, key VARCHAR, "
                     "old VARCHAR[])")
        if ids:
            olds = [key_map(ids, s) for s in previous_secrets]
            conn.register("_key_map", pd.DataFrame({
                "raw": ids, "key": list(key_map(ids, secret).values()),
                "old": [[o[u] for o in olds] for u in ids]}))
            conn.execute(f"INSERT INTO {keys} SELECT raw, key, old FROM _key_map")
            conn.unregister("_key_map")
        replaced.append(f"{keys}.key AS {col}")
        joins.append(f"LEFT JOIN {keys} ON {stage}.{col} = {keys}.raw")
    if not replaced:
        return stage
    return (f"(SELECT {stage}.* REPLACE ({', '.join(replaced)}) FROM {stage} "
            f"{' '.join(joins)})")


def _erasure(conn: duckdb.DuckDBPyConnection, contract: StreamContract, rows: str,
             report: StreamReport, rotated: bool = False) -> str | None:
    """The condition that marks a row of ``rows`` erased (None: nothing to erase).
    Rows of users with a deletion request never enter the warehouse, and neither do
    interactions on their impressions. Erased rows are counted per file, not kept."""
    i, key = next(((i, f.name) for i, f in enumerate(contract.fields) if f.pseudonymise),
                  (None, None))
    if contract.stream == "deletions":
        return None
    if key is not None:
        condition = f"{quote_ident(key)} IN {TOMBSTONE_KEYS}"
        if rotated:
            # Or tombstoned under a secret used before the current one.
            condition = (f"({condition} OR {quote_ident(key)} IN (SELECT k.key FROM "
                         f"_keys_{i} k, unnest(k.old) u(o) WHERE u.o IN {TOMBSTONE_KEYS}))")
    elif "impression_id" in contract.names:
        condition = "impression_id IN (SELECT impression_id FROM _erased_impressions)"
    elif "request_id" in contract.names:
        condition = "request_id IN (SELECT request_id FROM _erased_impressions)"
    else:
        return None
    if contract.stream == "impressions":
        conn.execute(f"INSERT INTO _erased_impressions SELECT impression_id, request_id "
                     f"FROM {rows} WHERE {condition} AND impression_id IS NOT NULL")
    per_file = dict(conn.execute(f"SELECT _file, count(*) FROM {rows} WHERE {condition} "
                                 "GROUP BY _file").fetchall())
    for f in report.files:
        f["erased"] = per_file.get(f["file"], 0)
    report.erased = sum(per_file.values())
    return condition


def _tombstone_aliases(conn: duckdb.DuckDBPyConnection, contract: StreamContract,
                       partition_date: str) -> None:
    """The day's accepted deletion requests' keys under the secrets used before the
    current one, in `raw.deletion_request_keys` (replacing the day's)."""
    i, f = next((i, f) for i, f in enumerate(contract.fields) if f.pseudonymise)
    conn.execute("DELETE FROM raw.deletion_request_keys WHERE partition_date = ?",
                 [partition_date])
    conn.execute(f"""
        INSERT INTO raw.deletion_request_keys
        SELECT DISTINCT DATE '{partition_date}', unnest(k.old) FROM _checked c
        JOIN _keys_{i} k ON c.{quote_ident(f.name)} = k.key WHERE c._reason IS NULL""")


def _classify(conn: duckdb.DuckDBPyConnection, contract: StreamContract, partition_date: str,
              rows: str, erased: str | None, keep_extras: bool = True) -> None:
    """`_checked`: each kept row of ``rows`` (not erased) with its rejection (NULL when
    accepted), duplicates included."""
    rule, bad_col, reason = rejection_sql(contract, partition_date,
                                          contract.keeps_extras and keep_extras)
    kept = f"WHERE ({erased}) IS NOT TRUE" if erased else ""
    conn.execute(f"CREATE OR REPLACE TEMP TABLE _checked AS "
                 f"SELECT * EXCLUDE (_flywheel_rule), {bad_col} AS _bad_column, {reason} AS _reason "
                 f"FROM (SELECT *, {rule} AS _flywheel_rule FROM {rows} {kept})")
    for id_field in contract.id_fields:
        idq = quote_ident(id_field)
        # Replays of an id already accepted in this partition are rejected; the first
        # occurrence (by file, then row) is kept.
        conn.execute(f"""
            UPDATE _checked SET _bad_column = '{id_field}',
                _reason = 'duplicate {id_field}: ' || '''' || d.{idq} || '''' ||
                          ' (first at ' || d.first_file || ' row ' || d.first_row || ')'
            FROM (
                SELECT _file, _row, {idq},
                       first_value(_file) OVER w AS first_file,
                       first_value(_row) OVER w AS first_row,
                       row_number() OVER w AS rank
                FROM _checked WHERE _reason IS NULL AND {idq} IN (
                    -- Only ids that occur twice are ranked: a hash aggregate finds
                    -- them, the window then sorts a few rows, not the whole day.
                    SELECT {idq} FROM _checked WHERE _reason IS NULL
                    GROUP BY {idq} HAVING count(*) > 1)
                WINDOW w AS (PARTITION BY {idq} ORDER BY _file, _row)
            ) d
            WHERE d.rank > 1 AND _checked._file = d._file AND _checked._row = d._row
        """)


def _write(conn: duckdb.DuckDBPyConnection, contract: StreamContract, partition_date: str,
           report: StreamReport, keep_extras: bool) -> None:
    typed = ", ".join(f"{typed_expr(f)} AS {quote_ident(f.column)}" for f in contract.fields)
    extras = ", _extras AS extras" if contract.keeps_extras and keep_extras else ""
    report.accepted = warehouse.replace_partition(
        conn, contract.table, partition_date,
        f"SELECT DATE '{partition_date}' AS partition_date, {typed}, "
        f"_file AS source_file, _row AS source_row{extras} FROM _checked WHERE _reason IS NULL")
    # The quarantined record keeps each value up to QUARANTINE_VALUE_CHARS: enough to
    # see what was wrong, not a client's ten megabytes.
    record = "to_json(struct_pack(" + ", ".join(
        [f"{quote_ident(f.column)} := left({quote_ident(f.name)}, {QUARANTINE_VALUE_CHARS})"
         for f in contract.fields]
        + ([f"extras := left(_extras, {QUARANTINE_VALUE_CHARS})"] if extras else [])) + "))"
    conn.execute(
        f"INSERT INTO raw.quarantined_events SELECT DATE '{partition_date}', "
        f"'{contract.stream}', _file, _row, _bad_column, _reason, "
        f"CASE WHEN _parse_error IS NULL THEN {record} END FROM _checked WHERE _reason IS NOT NULL")
    report.quarantined = conn.execute(
        "SELECT count(*) FROM raw.quarantined_events WHERE partition_date = ? AND stream = ?",
        [partition_date, contract.stream]).fetchone()[0]
    report.reasons = dict(conn.execute(
        "SELECT coalesce(column_name, '(row)') || ': ' || regexp_replace(reason, ':.*', ''), "
        "count(*) FROM raw.quarantined_events WHERE partition_date = ? AND stream = ? "
        "GROUP BY 1 ORDER BY 2 DESC", [partition_date, contract.stream]).fetchall())
    conn.execute("DELETE FROM raw.landing_files WHERE partition_date = ? AND stream = ?",
                 [partition_date, contract.stream])
    for f in report.files:
        conn.execute("INSERT INTO raw.landing_files VALUES (?, ?, ?, ?, ?, ?, ?)",
                     [partition_date, contract.stream, f["file"], f["format"], f["rows"],
                      f["bytes"], f.get("erased", 0)])
    conn.execute("DELETE FROM raw.refused_files WHERE partition_date = ? AND stream = ?",
                 [partition_date, contract.stream])
    for f in report.refused:
        conn.execute("INSERT INTO raw.refused_files VALUES (?, ?, ?, ?, ?)",
                     [partition_date, contract.stream, f["entry"], f["reason"], f["bytes"]])


def ingest_partition(conn: duckdb.DuckDBPyConnection, landing_dir: Path, partition_date: str,
                     contracts: tuple[StreamContract, ...], secret: str,
                     required_streams: tuple[str, ...], keep_extras: bool = True,
                     dropped_extras: tuple[str, ...] = (),
                     previous_secrets: tuple[str, ...] = ()) -> dict[str, StreamReport]:
    """Ingest every stream of one landing day, all in one transaction. Columns the
    contract does not name are kept in `extras` unless ``keep_extras`` is off, less the
    identifier-like ones named in ``dropped_extras`` (never stored). Deletion requests
    are honoured under ``secret`` and each of ``previous_secrets`` (a rotation of the
    pseudonymisation secret): their keys under those are kept as tombstones too.

    Raises :class:`LandingIncomplete` when a required stream has no _SUCCESS marker
    (nothing is written). A file that cannot be read at all is refused (its report's
    ``refused``, `raw.refused_files`) and the rest of the day is ingested.
    """
    dt.date.fromisoformat(partition_date)  # refuse anything but a date before building SQL
    missing = [s for s in required_streams if not is_day_complete(landing_dir, s, partition_date)]
    if missing:
        raise LandingIncomplete(
            f"landing day {partition_date} is not complete: no {SUCCESS_MARKER} in "
            + ", ".join(str(partition_dir(landing_dir, s, partition_date)) for s in missing))
    reports: dict[str, StreamReport] = {}
    try:
        # Every stream is staged before the transaction opens (see _stage); a file
        # that cannot be read is refused there, and the rest of the day is read.
        for contract in contracts:
            files, refused = scan_landing_day(landing_dir, contract.stream, partition_date)
            reports[contract.stream] = StreamReport(contract.stream, refused=refused)
            _stage(conn, contract, files, landing_dir, reports[contract.stream],
                   frozenset(dropped_extras))
            reports[contract.stream].lookalike_columns = _lookalike_columns(conn, contract)
        with warehouse.transaction(conn):
            # Check results belong to the data they checked: the day's earlier ones go
            # with it, so that a crash before the checks run again leaves none that
            # passed on other rows (the gate reads a missing one as not passed).
            conn.execute("DELETE FROM monitor.check_results WHERE partition_date = ?",
                         [partition_date])
            conn.execute("DELETE FROM raw.quarantined_events WHERE partition_date = ?",
                         [partition_date])
            conn.execute("CREATE OR REPLACE TEMP TABLE _erased_impressions (impression_id "
                         "VARCHAR, request_id VARCHAR)")
            for contract in contracts:
                report = reports[contract.stream]
                rows = _pseudonymised(conn, contract, secret, previous_secrets)
                _classify(conn, contract, partition_date, rows,
                          _erasure(conn, contract, rows, report, bool(previous_secrets)),
                          keep_extras)
                if contract.stream == "deletions":
                    _tombstone_aliases(conn, contract, partition_date)
                # Raw ids (the staged rows, the keys' map) go as soon as the rows are
                # judged (a rollback brings the staged rows back: `finally` drops them).
                conn.execute(f"DROP TABLE {staged_table(contract)}")
                for i, f in enumerate(contract.fields):
                    if f.pseudonymise:
                        conn.execute(f"DROP TABLE _keys_{i}")
                _write(conn, contract, partition_date, report, keep_extras)
                conn.execute("DROP TABLE _checked")
            conn.execute("DROP TABLE _erased_impressions")
    finally:
        for contract in contracts:
            conn.execute(f"DROP TABLE IF EXISTS {staged_table(contract)}")
    return reports


def quarantine_examples(conn: duckdb.DuckDBPyConnection, partition_date: str, stream: str,
                        limit: int = 3) -> list[dict]:
    """The most common rejection reasons of a stream, each with one example row."""
    rows = conn.execute("""
        SELECT column_name, any_value(reason) AS reason, count(*) AS n,
               arg_min(source_file, (source_file, source_row)) AS file,
               arg_min(source_row, (source_file, source_row)) AS row
        FROM raw.quarantined_events WHERE partition_date = ? AND stream = ?
        GROUP BY column_name, regexp_replace(reason, ':.*', '')
        ORDER BY n DESC LIMIT ?""", [partition_date, stream, limit]).fetchall()
    return [dict(column=c, reason=r, count=n, file=f, row=row) for c, r, n, f, row in rows]


def summary_markdown(reports: dict[str, StreamReport]) -> str:
    """Rows read, accepted, quarantined and erased per stream."""
    return markdown_table(["stream", "read", "accepted", "quarantined", "erased"],
                          [(k, r.rows_read, r.accepted, r.quarantined, r.erased)
                           for k, r in reports.items()])


def quarantine_reasons(reports: dict[str, StreamReport]) -> dict[str, int]:
    """Quarantined rows by ``stream.reason``."""
    return {f"{k}.{reason}": n for k, r in reports.items() for reason, n in r.reasons.items()}


def reconcile_counts(conn: duckdb.DuckDBPyConnection, partition_date: str,
                     contract: StreamContract) -> tuple[int, int, int]:
    """Rows read from a stream's landing files (less rows erased on a deletion request,
    which are not kept anywhere), rows of it accepted, and rows of it in quarantine."""
    return conn.execute(f"""
        SELECT (SELECT coalesce(sum(rows_read - rows_erased), 0) FROM raw.landing_files
                WHERE partition_date = $d AND stream = $s),
               (SELECT count(*) FROM {contract.table} WHERE partition_date = $d),
               (SELECT count(*) FROM raw.quarantined_events
                WHERE partition_date = $d AND stream = $s)""",
        {"d": partition_date, "s": contract.stream}).fetchone()


def unread_landing(conn: duckdb.DuckDBPyConnection, partition_date: str, stream: str,
                   required: bool) -> str | None:
    """What on-call reads when part of a stream's landing day was not read: each refused
    entry with its reason, or a required stream marked complete with no row in it.
    None when every entry was read."""
    refused = conn.execute("SELECT entry, reason FROM raw.refused_files WHERE "
                           "partition_date = ? AND stream = ? ORDER BY entry",
                           [partition_date, stream]).fetchall()
    if refused:
        shown = "; ".join(f"{entry}: {reason}" for entry, reason in refused[:3])
        more = f" (and {len(refused) - 3} more in raw.refused_files)" if len(refused) > 3 else ""
        return f"{stream}: {len(refused)} landing entries not read: {shown}{more}"
    files, rows = conn.execute("SELECT count(*), coalesce(sum(rows_read), 0) FROM "
                               "raw.landing_files WHERE partition_date = ? AND stream = ?",
                               [partition_date, stream]).fetchall()[0]
    if required and rows == 0:
        return (f"{stream}: the day is marked complete ({SUCCESS_MARKER}) but no row was read "
                f"({files} data files): a required stream cannot be empty")
    return None


def quarantine_failure(stream: str, share: float, limit: float, examples: list[dict]) -> str | None:
    """What on-call reads when a stream's quarantine share is over the limit: the share,
    the most common column and reason, and an example file and row."""
    if share <= limit or not examples:
        return None
    e = examples[0]
    return (f"{stream}: {share:.1%} of rows quarantined (limit {limit:.0%}); "
            f"most common: column {e['column'] or '(whole row)'}: {e['reason']} "
            f"— e.g. {e['file']} row {e['row']} ({e['count']} rows like it)")
