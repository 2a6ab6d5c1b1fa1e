"""JSON Lines read by DuckDB give exactly the rows, line numbers, values, parse errors
and extras of the line-exact Python reader; files DuckDB cannot number line for line
go to that reader."""

import gzip
import json

import pytest

from flywheel_assets.ingest import reader

COLUMNS = ["event_id", "signal", "value"]
GOOD = [json.dumps({"event_id": f"e{i}", "signal": "skip", "value": i / 4}) for i in range(5)]

# name: (the file's text, DuckDB reads it)
CASES = {
    "clean": ("\n".join(GOOD) + "\n", True),
    "no final newline": ("\n".join(GOOD), True),
    "bad lines": ("\n".join([GOOD[0], '{"event_id": "e9", ', "[1, 2]", '"text"', "3", "null",
                             "   ", "\t", GOOD[1], '{"event_id": true, "value": null}']) + "\n",
                  True),
    "extras, nested and identifier-like fields": ("\n".join([
        GOOD[0], json.dumps({"event_id": "x", "device": "tv", "userId": "u1", "signal": "save"}),
        json.dumps({"event_id": "y", "signal": {"b": [1, 2], "a": 1}})]) + "\n", True),
    "numbers Python and DuckDB write differently": ("\n".join(
        ['{"event_id": "n1", "value": 1e16}', '{"event_id": "n2", "value": 1e400}',
         '{"event_id": "n3", "value": 1.5e-7}', '{"event_id": "n4", "value": -0}',
         '{"event_id": "n5", "value": 1.0}', '{"event_id": 12345678901234567890123}',
         '{"event_id": 7, "value": 0.95}']) + "\n", True),
    "what only Python rejects or reads": ("\n".join(
        ['{"event_id": "a", "event_id": "b"}', '{"event_id": "c", "value": 1,}',
         '{"event_id": "d", "signal": [1,]}', '\ufeff' + GOOD[0], '\x0b' + GOOD[1],
         '{"event_id": "\\ud800x"}', '\u00a0', '{"event_id": "caf\u00e9"}',
         '{"signal": ' + "[" * 1200 + "]" * 1200 + "}"]) + "\n", True),
    "crlf": ("\r\n".join(GOOD) + "\r\n", True),
    "mixed line endings": (GOOD[0] + "\r\n" + GOOD[1] + "\n" + GOOD[2] + "\r\n", True),
    "NaN, a 5000-digit number, nesting too deep to write back": ("\n".join(
        ['{"event_id": "nan", "value": NaN}', '{"event_id": "big", "value": ' + "1" * 5000 + "}",
         '{"event_id": "deep", "signal": ' + "[" * 990 + "]" * 990 + "}", GOOD[0]]) + "\n", True),
    "a BOM on the first line": ("\ufeff" + "\n".join(GOOD) + "\n", False),
    "an empty line": ("\n".join([GOOD[0], "", GOOD[1]]) + "\n", False),
    "an empty first line": ("\n" + "\n".join(GOOD) + "\n", False),
    "an empty crlf line": ("\r\n".join([GOOD[0], "", GOOD[1]]) + "\r\n", False),
    "a lone carriage return": (GOOD[0] + "\r" + GOOD[1] + "\n", False),
    "the separator byte": ("\n".join([GOOD[0], '{"event_id": "a\x01b"}', GOOD[1]]) + "\n", False),
    "a line over the limit": ("\n".join([GOOD[0], json.dumps(
        {"event_id": "long", "signal": "x" * (reader.MAX_LINE_BYTES + 10)}), GOOD[1]]) + "\n",
                              False),
}


def _exact(path, dropped):
    rows = []
    for batch in reader._batches(COLUMNS, reader._jsonl_records(path, COLUMNS, dropped)):
        rows += batch.to_pylist()
    return rows


def _write(path, data: bytes, gz: bool):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("gz", [False, True])
def test_duckdb_reads_json_lines_exactly_as_the_python_reader(tmp_path, name, gz):
    text, by_duckdb = CASES[name]
    path = _write(tmp_path / ("part.jsonl.gz" if gz else "part.jsonl"), text.encode(), gz)
    dropped = frozenset({"userid"})
    batches = reader._jsonl_by_duckdb(path, COLUMNS, dropped)
    expected = _exact(path, dropped)
    assert expected, "a case must have rows"
    if not by_duckdb:
        assert batches is None
    else:
        assert batches is not None
        got = [row for b in batches for row in b.to_pylist()]
        assert got  # the batches stream once
        assert got == expected
    # Whichever reader takes it, read_landing_file gives the exact rows.
    assert [r for t in reader.read_landing_file(path, COLUMNS, {"userId"}) for r in t.to_pylist()] \
        == expected


@pytest.mark.parametrize("content", [b"", b"\xff\xfe{}\n", b"{}\n" * 3])
def test_files_duckdb_cannot_read_go_to_the_exact_reader(tmp_path, content):
    # Empty, not UTF-8, or a name DuckDB would read as a glob.
    name = "p[1].jsonl" if content.startswith(b"{}") else "part.jsonl.gz"
    path = tmp_path / name
    path.write_bytes(gzip.compress(content) if name.endswith(".gz") and content else content)
    assert reader._jsonl_by_duckdb(path, COLUMNS, frozenset()) is None
    (tmp_path / "p1.jsonl").write_text(GOOD[0] + "\n")  # what the glob would match
    rows = [r for t in reader.read_landing_file(path, COLUMNS) for r in t.to_pylist()]
    assert len(rows) == len([x for x in content.split(b"\n") if x.strip()])


def test_a_truncated_gzip_is_a_landing_file_error(tmp_path):
    path = tmp_path / "part.jsonl.gz"
    path.write_bytes(gzip.compress(("\n".join(GOOD) + "\n").encode())[:-12])
    with pytest.raises(reader.LandingFileError, match="part.jsonl.gz"):
        list(reader.read_landing_file(path, COLUMNS))


def test_parquet_utc_time_stamps_become_text_the_warehouse_reads_back_to_the_microsecond(tmp_path):
    """Contract time stamps are formatted by DuckDB (floored to the microsecond, as the
    warehouse's own cast of Arrow's text floors them); a value beyond DuckDB's range
    leaves the column to Arrow's text, instead of failing the file; other columns (kept
    in `extras`) keep every digit."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    ns = [1767225600468000001, -1, -1500, 0, None]
    cases = {
        "ns": pa.array(ns, pa.timestamp("ns", tz="UTC")),
        "ms": pa.array([1767225600468, -1, None, 0, 5], pa.timestamp("ms", tz="UTC")),
        "us at the edge": pa.array([1767225600468000, 2**63 - 1, None, -5, 7],
                                   pa.timestamp("us", tz="UTC")),
    }
    for name, ts in cases.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({"event_id": ["a", "b", "c", "d", "e"], "ts": ts,
                                 "seen_at": pa.array(ns, pa.timestamp("ns", tz="UTC"))}), path)
        rows = [r for b in reader.read_landing_file(path, ["event_id", "ts"]) for r in b.to_pylist()]
        arrow_text = pa.compute.cast(ts, pa.string()).to_pylist()
        with duckdb.connect() as conn:
            def typed(texts):
                return [conn.execute("SELECT TRY_CAST(? AS TIMESTAMPTZ)", [t]).fetchone()[0]
                        for t in texts]
            assert typed([r["ts"] for r in rows]) == typed(arrow_text), name
        extras = [json.loads(r["_extras"])["seen_at"] for r in rows[:3]]
        assert extras == ["2026-01-01 00:00:00.468000001Z", "1969-12-31 23:59:59.999999999Z",
                              "1969-12-31 23:59:59.999998500Z"], name


@pytest.mark.parametrize("name", ["part.csv", "part.csv.gz"])
@pytest.mark.parametrize("header", ['event_id,signal,value', '"event_id","signal","value"'])
def test_a_csv_that_starts_with_a_byte_order_mark_reads_its_first_column(tmp_path, name, header):
    # Excel's "CSV UTF-8" writes one (R's write.csv quotes the names); the first column's
    # name had carried it, and every row had been quarantined as missing that column.
    text = f"\ufeff{header}\ne1,click,1\ne2,skip,0\n".encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    rows = [r for t in reader.read_landing_file(path, COLUMNS) for r in t.to_pylist()]
    assert [r["event_id"] for r in rows] == ["e1", "e2"]
    assert all(r.get("parse_error") is None for r in rows), rows
