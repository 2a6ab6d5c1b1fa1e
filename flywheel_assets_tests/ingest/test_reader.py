"""JSON Lines through DuckDB give exactly the rows, line numbers, parse errors and extras
of the line-exact Python reader; files DuckDB cannot number line for line fall back."""

import gzip
import json

import duckdb
import pytest

from flywheel_assets.ingest.reader import read_landing_file, stage_jsonl

COLUMNS = ["event_id", "signal", "value"]
GOOD = [json.dumps({"event_id": f"e{i}", "signal": "skip", "value": i / 4}) for i in range(5)]

CASES = {
    # name: (lines joined as the file's bytes, DuckDB reads it)
    "clean": ("\n".join(GOOD) + "\n", True),
    "no final newline": ("\n".join(GOOD), True),
    "bad lines": ("\n".join([GOOD[0], '{"event_id": "e9", ', "[1, 2]", '"text"', "3",
                             "   ", GOOD[1], '{"event_id": true, "value": null}']) + "\n", True),
    "extras and a nested value": ("\n".join([
        GOOD[0], json.dumps({"event_id": "x", "device": "tv", "userId": "u1", "signal": "save"}),
        json.dumps({"event_id": "y", "signal": {"a": [1, 2]}})]) + "\n", True),
    "crlf": ("\r\n".join(GOOD) + "\r\n", True),
    "an empty line": ("\n".join([GOOD[0], "", GOOD[1]]) + "\n", False),
    "an empty first line": ("\n" + "\n".join(GOOD) + "\n", False),
    "an empty crlf line": ("\r\n".join([GOOD[0], "", GOOD[1]]) + "\r\n", False),
    "a lone carriage return": (GOOD[0] + "\r" + GOOD[1] + "\n", False),
    "the separator byte": ("\n".join([GOOD[0], '{"event_id": "a\x01b"}', GOOD[1]]) + "\n", False),
}


def _python_rows(path, dropped):
    rows = []
    for batch in read_landing_file(path, COLUMNS, dropped):
        rows += batch.to_pylist()
    return rows


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("gz", [False, True])
def test_duckdb_reads_json_lines_as_the_exact_reader_does(tmp_path, name, gz):
    text, by_duckdb = CASES[name]
    path = tmp_path / ("part.jsonl.gz" if gz else "part.jsonl")
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    dropped = frozenset({"userid"})
    conn = duckdb.connect()
    conn.execute("CREATE TEMP TABLE _out (event_id VARCHAR, signal VARCHAR, value VARCHAR, "
                 "_row BIGINT, _parse_error VARCHAR, _extras VARCHAR)")
    n = stage_jsonl(conn, path, COLUMNS, dropped, "INSERT INTO _out SELECT * FROM _jsonl", [])
    expected = _python_rows(path, dropped)
    # Nothing of the attempt is left in the connection, whichever reader took the file.
    assert conn.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name IN "
                        "('_lines', '_parsed', '_jsonl')").fetchone()[0] == 0
    if not by_duckdb:
        assert n is None
        assert conn.execute("SELECT count(*) FROM _out").fetchone()[0] == 0
        return
    assert n == len(expected)
    got = conn.execute("SELECT * FROM _out ORDER BY _row").df().astype(object).where(lambda f: f.notna(), None).to_dict("records")
    for mine, exact in zip(got, expected):
        for key in exact:
            if key == "signal" and exact[key] and exact[key].startswith("{"):
                # A nested value: the same JSON, DuckDB's spacing.
                assert json.loads(mine[key]) == json.loads(exact[key])
            elif key == "value" and exact[key] is not None:
                assert float(mine[key]) == float(exact[key])
            else:
                assert mine[key] == exact[key], (name, key, mine, exact)


def test_invalid_utf8_falls_back_to_the_exact_reader_inside_a_transaction(tmp_path):
    path = tmp_path / "part.jsonl"
    path.write_bytes(GOOD[0].encode() + b"\n\xff\xfe" + GOOD[1].encode() + b"\n")
    conn = duckdb.connect()
    # Ingestion stages inside one transaction: a DuckDB error would abort it.
    conn.execute("BEGIN")
    conn.execute("CREATE TEMP TABLE _out (event_id VARCHAR, signal VARCHAR, value VARCHAR, "
                 "_row BIGINT, _parse_error VARCHAR, _extras VARCHAR)")
    assert stage_jsonl(conn, path, COLUMNS, frozenset(), "INSERT INTO _out SELECT * FROM _jsonl",
                       []) is None
    assert [r["_row"] for r in _python_rows(path, frozenset())] == [1, 2]
    conn.execute("INSERT INTO _out (_row) VALUES (1)")  # the transaction still works
    conn.execute("COMMIT")
