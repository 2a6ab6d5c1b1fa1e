"""Bytes that are not UTF-8: the row that holds them is quarantined with the byte and
where it is, the others are read, rows reconcile, and no replacement character is ever
stored. JSON Lines (plain and gzip) and CSV, on a real DuckDB file through Dagster."""

import gzip
import json

import pytest

from flywheel_assets_tests.ingest.test_ingest import (DAY, GOOD_PARQUET, INTERACTIONS, _imp,
                                                      _materialize, _query, _write_day)


def _jsonl_with_a_latin1_line(path, gz: bool) -> None:
    good = [json.dumps(_imp(i)).encode() for i in (500, 501)]
    bad = json.dumps(_imp(502, device="tv")).encode().replace(b'"tv"', b'"t\xe9l\xe9"')
    data = b"\n".join([good[0], bad, good[1]]) + b"\n"
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("name,gz", [("part-5.jsonl", False), ("part-5.jsonl.gz", True)])
def test_a_json_line_with_bytes_that_are_not_utf8_is_quarantined(tmp_path, name, gz):
    _write_day(tmp_path / "landing", GOOD_PARQUET, [], INTERACTIONS)
    _jsonl_with_a_latin1_line(tmp_path / "landing" / "impressions" / f"date={DAY}" / name, gz)
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed
              for e in _materialize(tmp_path).get_asset_check_evaluations()}
    rows = _query(tmp_path, "SELECT source_row, reason, record FROM raw.quarantined_events "
                            "WHERE stream = 'impressions'")
    assert [(r[0], r[2]) for r in rows] == [(2, None)]  # line 2; its bytes not kept
    assert rows[0][1].startswith("not valid UTF-8: byte 0xe9 at character ")
    assert _query(tmp_path, "SELECT count(*) FROM raw.impressions WHERE impression_id IN "
                            "('i500', 'i501')") == [(2,)]
    assert checks[("raw_impressions", "rows_reconcile")]
    assert _query(tmp_path, "SELECT count(*) FROM raw.impressions WHERE "
                            "contains(device, chr(65533))") == [(0,)]


def test_a_csv_row_with_bytes_that_are_not_utf8_is_quarantined(tmp_path):
    _write_day(tmp_path / "landing", GOOD_PARQUET, [], INTERACTIONS)
    events = tmp_path / "landing" / "interactions" / f"date={DAY}" / "events.csv"
    with open(events, "ab") as fh:
        fh.write(b"e900,i100,2026-01-01T10:00:00Z,compl\xe8te,1\n")
    checks = {(e.asset_key.to_user_string(), e.check_name): e.passed
              for e in _materialize(tmp_path).get_asset_check_evaluations()}
    rows = _query(tmp_path, "SELECT source_row, reason, record FROM raw.quarantined_events "
                            "WHERE stream = 'interactions' AND reason LIKE 'not valid UTF-8%'")
    assert [(r[0], r[2]) for r in rows] == [(len(INTERACTIONS) + 1, None)]
    assert "byte 0xe8" in rows[0][1]
    assert checks[("raw_interactions", "rows_reconcile")]
    assert _query(tmp_path, "SELECT count(*) FROM raw.interactions WHERE event_id = 'e900' "
                            "OR contains(signal, chr(65533))") == [(0,)]
