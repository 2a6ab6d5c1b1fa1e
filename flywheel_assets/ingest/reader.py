"""Read landing files (Parquet, JSON Lines, CSV; plain or gzip) as string batches.

Every value is kept as text and every row keeps its line (or row) number, so that the
contract's SQL can type the good rows and say exactly where a bad one came from. A row
that cannot even be parsed (broken JSON, a CSV line with the wrong number of fields)
still becomes a row, with `_parse_error` set, so it is quarantined and never lost.
Columns the contract does not name are kept too: each row's other fields as one JSON
object in `_extras` (NULL when there are none). Memory is bounded by the batch size,
not the file size.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Iterator

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
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline="")
    return open(path, "rt", encoding="utf-8", errors="replace", newline="")


def _jsonl_records(path: Path, columns: list[str], dropped: frozenset) -> Iterator[Record]:
    named = set(columns)
    with _open_text(path) as fh:
        for line_no, line in enumerate(fh, start=1):
            stripped = line.strip()
            if not stripped:
                continue  # a blank line carries no record, as in CSV
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
            yield ([_text(record.get(c)) for c in columns], line_no, error,
                   _extras_json(record, named, dropped))


def _csv_records(path: Path, columns: list[str], dropped: frozenset) -> Iterator[Record]:
    with _open_text(path) as fh:
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
            error = None
            if len(values) != len(header):
                error = f"expected {len(header)} fields, found {len(values)}"
                values = []
            yield ([(values[index[c]] if c in index and index[c] < len(values) else None) or None
                    for c in columns], line_no, error,
                   _extras_json({name: values[i] or None for name, i in other
                                 if i < len(values)}, set()) if other else None)


def _read_jsonl(path: Path, columns: list[str], dropped: frozenset) -> Iterator[pa.Table]:
    yield from _batches(columns, _jsonl_records(path, columns, dropped))


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
        data["_row"] = pa.array(range(start, start + n), pa.int64())
        data["_parse_error"] = pa.nulls(n, pa.string())
        if other:
            texts = {c: _as_text(record_batch.column(c)).to_pylist() for c in other}
            data["_extras"] = pa.array([_extras_json({c: texts[c][i] for c in other}, set())
                                        for i in range(n)], pa.string())
        else:
            data["_extras"] = pa.nulls(n, pa.string())
        start += n
        yield pa.table(data)


def _as_text(col: pa.Array) -> pa.Array:
    if pa.types.is_timestamp(col.type):
        # ISO-8601 with an explicit offset, whatever the writer's unit.
        col = pc.strftime(col, format="%Y-%m-%dT%H:%M:%S%z") if col.type.tz \
            else pc.strftime(col, format="%Y-%m-%dT%H:%M:%S")
    try:
        return pc.cast(col, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        # Lists, structs, maps: their JSON text.
        return pa.array([_text(v) for v in col.to_pylist()], pa.string())


def read_landing_file(path: Path, columns: list[str],
                      dropped: frozenset = frozenset()) -> Iterator[pa.Table]:
    """Yield string-typed batches of ``columns`` (+ ``_row``, ``_parse_error``,
    ``_extras``: the other columns, less those named in ``dropped``; matched by name,
    so a nested object is kept as it is)."""
    fmt = file_format(path)
    reader = {"parquet": _read_parquet, "jsonl": _read_jsonl, "csv": _read_csv}[fmt]
    try:
        yield from reader(path, columns, frozenset(identifier_key(c) for c in dropped))
    except (OSError, EOFError, UnicodeError, csv.Error) as exc:
        raise LandingFileError(f"{path}: cannot be read as {fmt} ({exc})") from exc
