"""Read landing files (Parquet, JSON Lines, CSV; plain or gzip) as string batches.

JSON Lines are read by DuckDB (`_jsonl_by_duckdb`): each line as text with its line
number, parsed in SQL; Python reads only the few lines DuckDB would read otherwise (not
JSON objects, unusual characters or numbers, other fields). A file DuckDB cannot number
line for line (invalid UTF-8, empty lines, lone carriage returns, the separator byte
inside a line, very long lines) is read by the line-exact Python reader below instead:
same rows, same line numbers, slower.

Every value is kept as text and every row keeps its line (or row) number, so that the
contract's SQL can type the good rows and say exactly where a bad one came from. A row
that cannot even be parsed (broken JSON, a CSV line with the wrong number of fields,
bytes that are not UTF-8) still becomes a row, with `_parse_error` set, so it is
quarantined and never lost; nothing is stored with replacement characters.
Columns the contract does not name are kept too: each row's other fields as one JSON
object in `_extras` (NULL when there are none). Memory is bounded by the batch size
(and, for JSON Lines read by DuckDB, its memory limit; it spills beyond), not the file
size.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import re
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BATCH_ROWS = 50_000


class LandingFileError(ValueError):
    """A landing file that cannot be read at all (not one bad row: the whole file)."""


def file_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix, fmt in ((".parquet", "parquet"), (".jsonl", "jsonl"), (".ndjson", "jsonl"),
                        (".json", "jsonl"), (".csv", "csv")):
        if name.endswith(suffix):
            return fmt
    raise LandingFileError(
        f"{path}: unknown landing file format (expected .parquet, .jsonl[.gz], .csv[.gz])"
    )


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate escape ("\ud800") is not text a table can hold: kept as
            # its escape, so the row is judged (and kept) instead of failing the file.
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    return str(value)


# A text record: its values of the contract's columns, its line number, the reason it
# could not be parsed (or None), its other columns as JSON (or None).
Record = tuple[list, int, "str | None", "str | None"]


def _batches(columns: list[str], records: Iterator[Record]) -> Iterator[pa.Table]:
    """Text records in batches of at most BATCH_ROWS rows."""
    pending: list[Record] = []
    for record in records:
        pending.append(record)
        if len(pending) >= BATCH_ROWS:
            yield _batch(columns, pending)
            pending = []
    if pending:
        yield _batch(columns, pending)


def _batch(columns: list[str], records: list[Record]) -> pa.Table:
    data = {c: pa.array([r[0][i] for r in records], pa.string()) for i, c in enumerate(columns)}
    data["_row"] = pa.array([r[1] for r in records], pa.int64())
    data["_parse_error"] = pa.array([r[2] for r in records], pa.string())
    data["_extras"] = pa.array([r[3] for r in records], pa.string())
    return pa.table(data)


def identifier_key(name: str) -> str:
    """A column name as identifier columns are matched: lower case, letters and digits
    only (`userId`, `user_id` and `User-ID` are one name)."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _extras_json(record: dict, named: set[str], dropped: frozenset = frozenset()) -> str | None:
    """The fields of a record that the contract does not name, less the identifier-like
    ones (``dropped``, matched by :func:`identifier_key`), as one JSON object."""
    other = {k: record[k] for k in record if k not in named and record[k] is not None
             and identifier_key(k) not in dropped}
    return json.dumps(other, sort_keys=True, default=str) if other else None


def _open_text(path: Path) -> io.TextIOBase:
    # Bytes that are not UTF-8 come through as lone surrogates (`_not_utf8` finds them):
    # their row is quarantined, never stored with replacement characters.
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="surrogateescape", newline="")
    return open(path, "rt", encoding="utf-8", errors="surrogateescape", newline="")


_UNDECODED = re.compile("[\udc80-\udcff]")


def _not_utf8(text: str, where: str = "") -> str | None:
    """The parse error of a line (or field) holding bytes that are not UTF-8 (None if
    it has none)."""
    bad = _UNDECODED.search(text)
    if bad is None:
        return None
    return (f"not valid UTF-8: byte 0x{ord(bad.group()) - 0xDC00:02x} at character "
            f"{bad.start() + 1}{where}")


def _jsonl_record(stripped: str, line_no: int, columns: list[str], named: set[str],
                  dropped: frozenset) -> Record:
    error = None
    record: dict = {}
    try:
        parsed = json.loads(stripped)
        if isinstance(parsed, dict):
            record = parsed
        else:
            # Name the type, never echo the line: it may hold a raw user id.
            error = f"not a JSON object (a JSON {type(parsed).__name__})"
    except json.JSONDecodeError as exc:
        error = f"invalid JSON: {exc.msg} at column {exc.colno}"
    except RecursionError:
        error = "invalid JSON: nested too deeply"
    except ValueError:  # e.g. an integer over Python's 4300 digits
        error = "invalid JSON: a number too long to read"
    try:
        return ([_text(record.get(c)) for c in columns], line_no, error,
                _extras_json(record, named, dropped))
    except (ValueError, RecursionError):
        # Parsed, but too deep or too long to write back as text: one bad row.
        return ([None] * len(columns), line_no, "invalid JSON: nested too deeply to keep", None)


def _jsonl_records(path: Path, columns: list[str], dropped: frozenset) -> Iterator[Record]:
    named = set(columns)
    with _open_text(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            stripped = line.strip()
            if not stripped:
                continue  # a blank line carries no record, as in CSV
            error = _not_utf8(stripped)
            yield (([None] * len(columns), line_no, error, None) if error else
                   _jsonl_record(stripped, line_no, columns, named, dropped))


# Every line as one text value: a separator byte no JSON text holds unescaped, no quote.
# ``rest`` catches a line that holds the separator anyway (then the exact reader runs).
_LINES = ("read_csv(?, columns = {'line': 'VARCHAR', 'rest': 'VARCHAR'}, header = false, "
          "delim = E'\\x01', quote = '', escape = '', auto_detect = false, "
          "strict_mode = false, null_padding = true)")
# DuckDB's CSV reader refuses longer lines; a file with one goes to the exact reader.
MAX_LINE_BYTES = 1 << 20


def _line_count(path: Path) -> int | None:
    """Lines in the file as Python numbers them, or None when DuckDB would number or
    read them otherwise: invalid UTF-8, an empty line (its CSV reader skips it), a lone
    carriage return, a NUL or separator byte, a line over MAX_LINE_BYTES, an empty or
    unreadable file, a name DuckDB would read as a glob. One pass over the bytes, no
    parsing."""
    if any(ch in str(path) for ch in "*?[{") or path.stat().st_size == 0:
        return None
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    lines = returns = crlf = 0
    previous, last = b"", b""
    since_newline = 0
    try:
        with opener(path, "rb") as fh:
            while chunk := fh.read(1 << 22):
                decoder.decode(chunk)
                if not previous and chunk.startswith(codecs.BOM_UTF8):
                    return None  # DuckDB drops a BOM, Python keeps it on line 1
                joined = previous + chunk
                if b"\n\n" in joined or b"\n\r\n" in joined or b"\x00" in chunk \
                        or b"\x01" in chunk or (not previous and chunk.startswith((b"\n", b"\r\n"))):
                    return None
                parts = chunk.split(b"\n")
                if len(parts) > 1:
                    if since_newline + len(parts[0]) > MAX_LINE_BYTES or any(
                            len(part) > MAX_LINE_BYTES for part in parts[1:-1]):
                        return None
                    since_newline = 0
                since_newline += len(parts[-1])
                if since_newline > MAX_LINE_BYTES:
                    return None
                newlines = len(parts) - 1
                lines += newlines
                returns += chunk.count(b"\r")
                crlf += joined.count(b"\r\n") - previous.count(b"\r\n")
                previous, last = joined[-2:], chunk[-1:]
        decoder.decode(b"", final=True)
    except (UnicodeDecodeError, OSError, EOFError, zlib.error):
        return None  # the exact reader says what is wrong with the file
    if returns != crlf:
        return None
    return lines + (last not in (b"", b"\n"))


# A line DuckDB's JSON functions would read otherwise than Python's json module, or
# whose text Python would render otherwise: anything but printable ASCII and tabs (BOM,
# Unicode whitespace, control characters), escapes (lone surrogates), a comma before a
# closing bracket (DuckDB accepts it, Python does not), repeated keys (DuckDB keeps the
# first, Python the last). Python reads these lines, a few in a real log.
_UNUSUAL = (r"regexp_matches(line, '[^\t\x20-\x7e]|\\u|,\s*[}\]]') "
            "OR len(_keys) <> len(list_distinct(_keys))")


def _unusual_value(i: int) -> str:
    """The ``i``-th named field (its JSON in ``_values``) when DuckDB would render its
    text otherwise than Python: nested, or a double in exponent notation (Python writes
    1e+16, DuckDB 10000000000000000.0)."""
    v = f"_values[{i + 1}]"
    return (f"json_type({v}) IN ('OBJECT', 'ARRAY') OR (json_type({v}) = 'DOUBLE' AND "
            f"(abs(TRY_CAST({v} AS DOUBLE)) >= 1e16 OR (TRY_CAST({v} AS DOUBLE) <> 0 AND "
            f"abs(TRY_CAST({v} AS DOUBLE)) < 1e-4)))")


def _jsonl_by_duckdb(path: Path, columns: list[str], dropped: frozenset,
                     memory_limit: str | None = None) -> Iterator[pa.RecordBatch] | None:
    """The file's rows as the exact reader gives them, read and parsed by DuckDB on a
    connection of its own (no error of it can reach the ingest's transaction; at most
    ``memory_limit``, spilling to a temporary directory): every line with its number,
    the contract's fields as text; lines DuckDB would read otherwise (`_UNUSUAL`), not
    JSON objects, or with other fields are read by the exact reader's Python, in
    batches. None when the file needs the exact reader; else batches of BATCH_ROWS."""
    import tempfile

    import duckdb

    expected = _line_count(path)
    if expected is None:
        return None
    named = set(columns)
    spill = tempfile.TemporaryDirectory(prefix="flywheel-jsonl-")
    config = {"temp_directory": spill.name, "preserve_insertion_order": True}
    if memory_limit:
        config["memory_limit"] = memory_limit
    conn = duckdb.connect(config=config)
    try:
        # The line's JSON is read here only: its type, its named fields' JSON (one
        # json_extract for all of them), its keys. Every later test reads these columns.
        paths = "[" + ", ".join(_json_path(c) for c in columns) + "]"
        conn.execute(f"""
            CREATE TABLE parsed AS
            SELECT _row, line, rest, _type,
                   CASE WHEN _type = 'OBJECT' THEN json_extract(line, {paths}) END AS _values,
                   CASE WHEN _type = 'OBJECT' THEN json_keys(line) END AS _keys,
                   regexp_full_match(line, '[ \t\r]*') AS _blank
            FROM (SELECT row_number() OVER () AS _row, line, rest,
                         CASE WHEN json_valid(line) THEN json_type(line) END AS _type
                  FROM {_LINES})""", [str(path)])
        read, split = conn.execute("SELECT count(*), count(rest) FROM parsed").fetchone()
        if read != expected or split:
            raise _NotForDuckDB
        unusual_values = " OR ".join(_unusual_value(i) for i in range(len(columns))) or "false"
        # A flat disjunction in a filter: DuckDB tests each row only until one holds
        # (inside a CASE every test ran on every row, three times slower).
        conn.execute(f"""
            CREATE TABLE odd AS SELECT _row, line FROM parsed
            WHERE NOT _blank AND (_type IS DISTINCT FROM 'OBJECT' OR {_UNUSUAL}
                  OR {unusual_values}
                  OR len(list_filter(_keys, lambda k: NOT list_contains($named, k))) > 0)""",
                     {"named": list(columns)})
        conn.execute("CREATE TABLE python (_row BIGINT, _blank BOOLEAN, "
                     + ", ".join(f"_py{i} VARCHAR" for i in range(len(columns)))
                     + ", _parse_error VARCHAR, _extras VARCHAR)")
        # Read through a cursor of its own: the inserts below would end a pending result.
        cursor = conn.cursor()
        odd = cursor.sql("SELECT _row, line FROM odd ORDER BY _row").to_arrow_reader(BATCH_ROWS)
        for batch in odd:
            rows = batch.to_pylist()
            # A line only Python's strip() finds blank (Unicode spaces) carries no record.
            records = [_jsonl_record(r["line"].strip(), r["_row"], columns, named, dropped)
                       if r["line"].strip() else None for r in rows]
            chunk = pa.table({
                "_row": pa.array([r["_row"] for r in rows], pa.int64()),
                "_blank": pa.array([rec is None for rec in records], pa.bool_()),
                **{f"_py{i}": pa.array([rec[0][i] if rec else None for rec in records], pa.string())
                   for i in range(len(columns))},
                "_parse_error": pa.array([rec[2] if rec else None for rec in records], pa.string()),
                "_extras": pa.array([rec[3] if rec else None for rec in records], pa.string())})
            conn.register("chunk", chunk)
            conn.execute("INSERT INTO python SELECT * FROM chunk")
            conn.unregister("chunk")
        cursor.close()
        # Python's reading wins for the lines it read.
        values = ", ".join(
            f"CASE WHEN f._row IS NOT NULL THEN f._py{i} WHEN p._type = 'OBJECT' THEN "
            f"p._values[{i + 1}] ->> '$' END AS {_sql_ident(c)}"
            for i, c in enumerate(columns))
        out = (f"SELECT {values}, p._row, f._parse_error, f._extras "
               "FROM parsed p LEFT JOIN python f USING (_row) "
               "WHERE NOT p._blank AND f._blank IS NOT TRUE ORDER BY p._row")
    except (duckdb.Error, _NotForDuckDB):
        # A file DuckDB cannot read or number as Python does: the exact reader decides.
        conn.close()
        spill.cleanup()
        return None
    except BaseException:
        conn.close()
        spill.cleanup()
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from conn.sql(out).to_arrow_reader(BATCH_ROWS)
        finally:
            conn.close()
            spill.cleanup()

    return batches()


class _NotForDuckDB(Exception):
    """The file's lines are not numbered by DuckDB as Python numbers them."""


def _json_path(column: str) -> str:
    return _sql_text('$."' + column + '"')


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# Python's csv module refuses a field over 128 KiB by failing the file; a long field is
# read whole and judged by the contract (its length rule quarantines the row).
MAX_CSV_FIELD_CHARS = 1 << 28


def _csv_records(path: Path, columns: list[str], dropped: frozenset) -> Iterator[Record]:
    csv.field_size_limit(MAX_CSV_FIELD_CHARS)
    with _open_text(path) as fh:
        # A byte-order mark (Excel's "CSV UTF-8") is not part of the first name, quoted
        # or not: dropped before the CSV is parsed.
        if fh.read(1) != "\ufeff":
            fh.seek(0)
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        index = {name: i for i, name in enumerate(header)}
        other = [(name, i) for i, name in enumerate(header)
                 if name and name not in columns and identifier_key(name) not in dropped]
        for values in reader:
            # Line numbers count the header as line 1, as a spreadsheet shows them.
            line_no = reader.line_num
            if not values:
                continue  # a blank line in CSV carries no record
            error = next((e for i, v in enumerate(values)
                          if (e := _not_utf8(v, f" of field {i + 1}"))), None)
            if error:
                values = []
            elif len(values) != len(header):
                error = f"expected {len(header)} fields, found {len(values)}"
                values = []
            yield ([(values[index[c]] if c in index and index[c] < len(values) else None) or None
                    for c in columns], line_no, error,
                   _extras_json({name: values[i] or None for name, i in other
                                 if i < len(values)}, set()) if other else None)


def _read_jsonl(path: Path, columns: list[str], dropped: frozenset,
                memory_limit: str | None = None) -> Iterator[pa.Table]:
    batches = _jsonl_by_duckdb(path, columns, dropped, memory_limit)
    if batches is None:
        yield from _batches(columns, _jsonl_records(path, columns, dropped))
    else:
        for batch in batches:
            yield pa.Table.from_batches([batch])


def _read_csv(path: Path, columns: list[str], dropped: frozenset) -> Iterator[pa.Table]:
    yield from _batches(columns, _csv_records(path, columns, dropped))


def _read_parquet(path: Path, columns: list[str], dropped: frozenset) -> Iterator[pa.Table]:
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise LandingFileError(f"{path}: not a readable Parquet file ({exc})") from exc
    names = pf.schema_arrow.names
    present = [c for c in columns if c in names]
    other = [c for c in names if c not in columns and not c.startswith("__index_level_")
             and identifier_key(c) not in dropped]
    start = 1
    for record_batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=(present + other) or None):
        n = record_batch.num_rows
        data = {}
        for c in columns:
            data[c] = _as_text(record_batch.column(c)) if c in present else pa.nulls(n, pa.string())
        data["_row"] = pa.array(np.arange(start, start + n, dtype=np.int64))
        data["_parse_error"] = pa.nulls(n, pa.string())
        if other:
            texts = {c: _as_text(record_batch.column(c), exact=True).to_pylist() for c in other}
            data["_extras"] = pa.array([_extras_json({c: texts[c][i] for c in other}, set())
                                        for i in range(n)], pa.string())
        else:
            data["_extras"] = pa.nulls(n, pa.string())
        start += n
        yield pa.table(data)


def _utc_text(col: pa.Array) -> pa.Array:
    """UTC time stamps as "2026-01-01T00:00:00.468000Z", formatted by DuckDB from their
    microseconds since the epoch (no time zone involved), faster than Arrow's cast to
    text. Nanoseconds are floored to the microsecond, as the warehouse's cast
    of the text would. A value DuckDB cannot format (beyond its range) leaves the whole
    column to Arrow's own text."""
    import duckdb

    try:
        if col.type.unit == "ns":
            col = pc.floor_temporal(col, unit="microsecond")
        # Exact from floored nanoseconds; checked from seconds or milliseconds.
        us = pc.cast(col, pa.timestamp("us", tz="UTC"), safe=col.type.unit != "ns")
        with duckdb.connect(config={"threads": 1}) as conn:
            conn.register("micros", pa.table({"us": pc.cast(us, pa.int64())}))
            return conn.sql("SELECT strftime(make_timestamp(us), '%Y-%m-%dT%H:%M:%S.%fZ') AS t "
                            "FROM micros").to_arrow_table().column("t").combine_chunks()
    except (pa.ArrowInvalid, duckdb.Error):
        return pc.cast(col, pa.string())


def _as_text(col: pa.Array, exact: bool = False) -> pa.Array:
    """A column as text. A contract field's UTC time stamps are formatted to the
    microsecond (what the warehouse keeps); with ``exact`` (other columns, kept as they
    came in `extras`), Arrow writes every digit."""
    if pa.types.is_timestamp(col.type) and col.type.tz in ("UTC", "+00:00"):
        # "2026-01-01 00:00:00.468000Z" from Arrow's own cast (faster than strftime);
        # the contract's fields by DuckDB's formatting, faster again.
        return pc.cast(col, pa.string()) if exact else _utc_text(col)
    if pa.types.is_timestamp(col.type):
        # ISO-8601 with an explicit offset, whatever the writer's unit.
        col = pc.strftime(col, format="%Y-%m-%dT%H:%M:%S%z") if col.type.tz \
            else pc.strftime(col, format="%Y-%m-%dT%H:%M:%S")
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        # Lists, structs, maps: their JSON text.
        return pa.array([_text(v) for v in col.to_pylist()], pa.string())


def read_landing_file(path: Path, columns: list[str], dropped: frozenset = frozenset(),
                      memory_limit: str | None = None) -> Iterator[pa.Table]:
    """Yield string-typed batches of ``columns`` (+ ``_row``, ``_parse_error``,
    ``_extras``: the other columns, less those named in ``dropped``; matched by name,
    so a nested object is kept as it is). ``memory_limit``: what DuckDB may hold while
    it reads JSON Lines (the warehouse's, when ingestion reads; else DuckDB's default)."""
    fmt = file_format(path)
    dropped = frozenset(identifier_key(c) for c in dropped)
    try:
        if fmt == "jsonl":
            yield from _read_jsonl(path, columns, dropped, memory_limit)
        else:
            yield from {"parquet": _read_parquet, "csv": _read_csv}[fmt](path, columns, dropped)
    # zlib.error: a gzip file whose compressed body is corrupt (not an OSError).
    except (OSError, EOFError, UnicodeError, csv.Error, zlib.error) as exc:
        raise LandingFileError(f"{path}: cannot be read as {fmt} ({exc})") from exc
