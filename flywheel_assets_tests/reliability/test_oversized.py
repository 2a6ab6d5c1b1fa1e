"""Oversized values: a ten-megabyte CSV field or JSON value quarantines its row (the
column and its length named), never the file or the day, and is never stored as an id;
the rest of the file is read and rows reconcile. On a real DuckDB file through Dagster."""

import csv
import json

from flywheel_assets.ingest.contract import MAX_EXTRAS_CHARS, MAX_ID_CHARS
from flywheel_assets_tests.ingest.test_ingest import (DAY, GOOD_PARQUET, INTERACTIONS, T, _imp,
                                                      _materialize, _query, _write_day)

HUGE = 10_000_000


def _checks(result) -> dict:
    return {(e.asset_key.to_user_string(), e.check_name): e.passed
            for e in result.get_asset_check_evaluations()}


def test_a_ten_megabyte_value_quarantines_its_row_not_the_file(tmp_path):
    _write_day(tmp_path / "landing", GOOD_PARQUET, [], INTERACTIONS)
    imp = tmp_path / "landing" / "impressions" / f"date={DAY}" / "part-6.jsonl"
    lines = [_imp(600), _imp(601, impression_id="x" * HUGE), _imp(602),
             _imp(603, page="p" * (MAX_EXTRAS_CHARS + 1))]
    imp.write_text("".join(json.dumps(r) + "\n" for r in lines))
    events = tmp_path / "landing" / "interactions" / f"date={DAY}" / "events.csv"
    with open(events, "a", newline="") as fh:
        csv.writer(fh).writerow(["e901", "i100", T, "s" * HUGE, "1"])
        csv.writer(fh).writerow(["e902", "i101", T, "complete", "1"])
    checks = _checks(_materialize(tmp_path))

    assert _query(tmp_path, """
        SELECT stream, source_row, column_name, reason FROM raw.quarantined_events
        WHERE reason LIKE 'too long%' OR reason LIKE 'other fields too long%'
        ORDER BY stream, source_row""") == [
        ("impressions", 2, "impression_id",
         f"too long: {HUGE} characters (limit {MAX_ID_CHARS})"),
        ("impressions", 4, "extras",
         f"other fields too long: {len(json.dumps({'page': 'p' * (MAX_EXTRAS_CHARS + 1)}))} "
         f"characters of JSON (limit {MAX_EXTRAS_CHARS})"),
        ("interactions", len(INTERACTIONS) + 1, "signal",
         f"too long: {HUGE} characters (limit 8192)")]
    # The rows around them are read; nothing of the day is refused; rows reconcile.
    assert _query(tmp_path, "SELECT count(*) FROM raw.impressions WHERE impression_id IN "
                            "('i600', 'i602')") == [(2,)]
    assert _query(tmp_path, "SELECT count(*) FROM raw.interactions WHERE event_id = 'e902'") == [(1,)]
    assert _query(tmp_path, "SELECT max(length(impression_id)) <= 1024 FROM raw.impressions") == [(True,)]
    assert _query(tmp_path, "SELECT count(*) FROM raw.refused_files") == [(0,)]
    # The quarantine keeps what was wrong, not the client's ten megabytes.
    assert _query(tmp_path, "SELECT max(length(record)) < 20000 FROM raw.quarantined_events") \
        == [(True,)]
    assert checks[("raw_impressions", "rows_reconcile")]
    assert checks[("raw_interactions", "rows_reconcile")]
