"""The landing folder on a bad day: every entry of a day is read or refused with its
reason, the rest of the day is ingested, and a blocking check names what was not read;
a re-ingest leaves no check result that passed on other rows. On a real DuckDB file
through Dagster."""

import gzip
import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel_assets import warehouse
from flywheel_assets.evaluate import promotion
from flywheel_assets.ingest import assets as ingest_assets
from flywheel_assets.resources import FlywheelResource
from flywheel_assets_tests.ingest.test_ingest import (DAY, GOOD_PARQUET, INTERACTIONS, _imp,
                                                      _materialize, _query, _write_day)

GOOD_ROWS = len(GOOD_PARQUET)


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _hidden(folder: Path, name: str) -> None:
    (folder / name).write_text(_jsonl([_imp(i) for i in range(600, 610)]))


def _symlink_outside(folder: Path, name: str) -> None:
    outside = folder.parents[3] / "outside.jsonl"
    outside.write_text(_jsonl([_imp(i) for i in range(700, 710)]))
    os.symlink(outside, folder / name)


def _subfolder(folder: Path, name: str) -> None:
    (folder / name).mkdir()
    (folder / name / "part-9.jsonl").write_text(_jsonl([_imp(800)]))


def _unknown_format(folder: Path, name: str) -> None:
    (folder / name).write_text(_jsonl([_imp(801)]))


def _truncated_gzip(folder: Path, name: str) -> None:
    data = gzip.compress(_jsonl([_imp(i) for i in range(900, 1000)]).encode())
    (folder / name).write_bytes(data[: len(data) // 2])


def _corrupt_parquet(folder: Path, name: str) -> None:
    pq.write_table(pa.Table.from_pylist([_imp(950)]), folder / name)
    raw = (folder / name).read_bytes()
    (folder / name).write_bytes(raw[:20] + b"\0" * 40 + raw[60:])


# (entry written into the impressions day, how, the reason's words)
REFUSED = [
    ("_part-2.jsonl", _hidden, "starts with '.' or '_'"),
    (".part-3.jsonl", _hidden, "starts with '.' or '_'"),
    ("link.jsonl", _symlink_outside, "a symbolic link"),
    ("nested", _subfolder, "a folder inside the landing day"),
    ("events.txt", _unknown_format, "unknown landing file format"),
    ("part-8.jsonl.gz", _truncated_gzip, "cannot be read"),
    ("part-7.parquet", _corrupt_parquet, "cannot be read as parquet"),
]


def _checks(result) -> dict[tuple[str, str], object]:
    return {(e.asset_key.to_user_string(), e.check_name): e
            for e in result.get_asset_check_evaluations()}


@pytest.fixture
def good_day(tmp_path):
    _write_day(tmp_path / "landing", GOOD_PARQUET, [], INTERACTIONS)
    return tmp_path


def _impressions(day_dir: Path) -> Path:
    return day_dir / "landing" / "impressions" / f"date={DAY}"


@pytest.mark.parametrize("name,write,reason", REFUSED, ids=[r[0] for r in REFUSED])
def test_an_entry_that_is_not_read_is_refused_by_name_and_the_rest_is_ingested(
        good_day, name, write, reason):
    write(_impressions(good_day), name)
    result = _materialize(good_day)
    checks = _checks(result)
    entry = f"impressions/date={DAY}/{name}"
    assert _query(good_day, "SELECT stream, entry FROM raw.refused_files") == [("impressions", entry)]
    assert reason in _query(good_day, "SELECT reason FROM raw.refused_files")[0][0]
    # The rest of the day is ingested, and nothing of the refused entry is.
    assert _query(good_day, "SELECT count(*) FROM raw.impressions") == [(GOOD_ROWS,)]
    assert _query(good_day, "SELECT count(*) FROM raw.quarantined_events "
                            "WHERE stream = 'impressions'") == [(0,)]
    read = checks[("raw_impressions", "landing_files_read")]
    assert not read.passed and entry in read.description and reason in read.description
    # Rows read (from the files that were read) still reconcile; other streams pass.
    assert checks[("raw_impressions", "rows_reconcile")].passed
    assert checks[("raw_interactions", "landing_files_read")].passed
    # The gate reads the failed check as a reason to hold.
    with warehouse.connect(good_day / "warehouse.duckdb") as conn:
        problems = warehouse.failed_or_missing_checks(conn, DAY, promotion.DATA_CHECKS)
    assert any("raw_impressions:landing_files_read failed" in p and entry in p for p in problems)


def test_what_a_writer_leaves_beside_its_files_is_passed_over(good_day):
    folder = _impressions(good_day)
    (folder / ".part-0.parquet.crc").write_bytes(b"\x00\x01")
    (folder / "_committed_1234").write_text("{}")
    (folder / "_temporary").mkdir()
    result = _materialize(good_day)
    assert _checks(result)[("raw_impressions", "landing_files_read")].passed
    assert _query(good_day, "SELECT count(*) FROM raw.refused_files") == [(0,)]
    assert _query(good_day, "SELECT count(*) FROM raw.impressions") == [(GOOD_ROWS,)]


def test_a_required_stream_marked_complete_with_no_data_file_fails_its_check(good_day):
    (good_day / "landing" / "interactions" / f"date={DAY}" / "events.csv").unlink()
    result = _materialize(good_day)
    checks = _checks(result)
    failed = checks[("raw_interactions", "landing_files_read")]
    assert not failed.passed and "no row was read" in failed.description
    assert checks[("raw_impressions", "landing_files_read")].passed
    assert _query(good_day, "SELECT count(*) FROM raw.impressions") == [(GOOD_ROWS,)]
    # An optional stream with no file (no deletion requested that day) is fine.
    assert checks[("deletion_requests", "landing_files_read")].passed


def test_a_header_only_file_in_a_required_stream_fails_its_check(good_day):
    events = good_day / "landing" / "interactions" / f"date={DAY}" / "events.csv"
    events.write_text(",".join(INTERACTIONS[0]) + "\n")
    checks = _checks(_materialize(good_day))
    failed = checks[("raw_interactions", "landing_files_read")]
    assert not failed.passed and "(1 data files)" in failed.description
    assert checks[("raw_interactions", "rows_reconcile")].passed


def _day_links_outside(good_day: Path) -> None:
    shutil.move(_impressions(good_day), good_day / "elsewhere")
    os.symlink(good_day / "elsewhere", _impressions(good_day))


def _day_links_to_another_day(good_day: Path) -> None:
    other = _impressions(good_day).with_name("date=2025-12-31")
    shutil.move(_impressions(good_day), other)
    os.symlink(other, _impressions(good_day))


def _stream_links_outside(good_day: Path) -> None:
    stream = good_day / "landing" / "impressions"
    shutil.move(stream, good_day / "elsewhere")
    os.symlink(good_day / "elsewhere", stream)


@pytest.mark.parametrize("link,reason", [
    (_day_links_outside, "the day's folder is a symbolic link"),
    (_day_links_to_another_day, "the day's folder is a symbolic link"),
    (_stream_links_outside, "leads outside the landing folder")])
def test_a_day_folder_reached_through_a_link_is_refused_whole(good_day, link, reason):
    link(good_day)
    checks = _checks(_materialize(good_day))
    failed = checks[("raw_impressions", "landing_files_read")]
    assert not failed.passed and reason in failed.description
    assert _query(good_day, "SELECT count(*) FROM raw.impressions") == [(0,)]


def test_a_re_ingest_takes_the_days_check_results_with_it(good_day):
    # Checks passed on the first delivery; a new delivery is ingested and the process
    # dies before its checks run: no result that passed on the old rows may remain.
    first = _materialize(good_day)
    assert all(e.passed for e in first.get_asset_check_evaluations())
    with warehouse.connect(good_day / "warehouse.duckdb") as conn:
        assert warehouse.failed_or_missing_checks(conn, DAY, promotion.DATA_CHECKS[:4]) == []
    pq.write_table(pa.Table.from_pylist([_imp(i, propensity=7.0) for i in range(400, 500)]),
                   _impressions(good_day) / "part-2.parquet")
    assert dg.materialize([ingest_assets.landing_day], partition_key=DAY,
                          resources={"flywheel": FlywheelResource(data_dir=str(good_day))}).success
    assert _query(good_day, "SELECT count(*) FROM monitor.check_results") == [(0,)]
    with warehouse.connect(good_day / "warehouse.duckdb") as conn:
        problems = warehouse.failed_or_missing_checks(conn, DAY, promotion.DATA_CHECKS)
    assert "raw_impressions:quarantine_share_below_threshold has not run for " + DAY in problems
