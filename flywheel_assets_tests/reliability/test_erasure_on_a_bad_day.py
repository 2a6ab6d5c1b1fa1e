"""A day's deletion requests are applied even when the day's other data fails a blocking
check: the requests are a legal obligation, the impressions' quality is not theirs.
On a real DuckDB file through Dagster, with the product's ingest checks."""

import csv

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel_assets.ingest import assets as ingest_assets
from flywheel_assets.ingest import checks as ingest_checks
from flywheel_assets.resources import FlywheelResource
from flywheel_assets_tests.ingest.test_ingest import (DAY, GOOD_PARQUET, INTERACTIONS, _imp,
                                                      _query, _write_day)

DAY2 = "2026-01-02"
T2 = "2026-01-02T09:00:00Z"
CHECKS = [ingest_checks.rows_reconcile, ingest_checks.landing_files_read,
          ingest_checks.quarantine_share_below_threshold, ingest_checks.accepted_rows_expectations]


def _ingest(data_dir, day: str):
    return dg.materialize([ingest_assets.landing_day, ingest_assets.user_erasure, *CHECKS],
                          partition_key=day, raise_on_error=False,
                          resources={"flywheel": FlywheelResource(data_dir=str(data_dir))})


def _land_a_bad_day_with_a_request(landing, person: str) -> None:
    """Day 2: most impressions with an impossible propensity (the quarantine's share far
    over its limit), one good impression of ``person``, and ``person``'s request."""
    for stream in ("impressions", "interactions", "deletions"):
        (landing / stream / f"date={DAY2}").mkdir(parents=True)
        (landing / stream / f"date={DAY2}" / "_SUCCESS").touch()
    rows = [_imp(900 + i, ts=T2, propensity=7.0) for i in range(40)]
    rows.append(_imp(2, impression_id="i2-day2", ts=T2))  # person-2, today
    pq.write_table(pa.Table.from_pylist(rows),
                   landing / "impressions" / f"date={DAY2}" / "part-0.parquet")
    with open(landing / "interactions" / f"date={DAY2}" / "events.csv", "w", newline="") as fh:
        csv.writer(fh).writerow(INTERACTIONS[0])
    with open(landing / "deletions" / f"date={DAY2}" / "deletions.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["user_id", "requested_at"], [person, "2026-01-02T08:00:00Z"]])


def _check(result, asset: str, name: str) -> bool:
    [evaluation] = [e for e in result.get_asset_check_evaluations()
                    if e.asset_key == dg.AssetKey(asset) and e.check_name == name]
    return evaluation.passed


def test_a_request_on_a_day_that_fails_a_blocking_check_is_still_applied(tmp_path):
    _write_day(tmp_path / "landing", GOOD_PARQUET, [], INTERACTIONS)
    assert _ingest(tmp_path, DAY).success
    assert _query(tmp_path, "SELECT count(*) FROM raw.impressions WHERE impression_id = 'i2'") == [(1,)]

    _land_a_bad_day_with_a_request(tmp_path / "landing", "person-2")
    result = _ingest(tmp_path, DAY2)
    # The impressions failed their blocking check: what follows them would not run.
    assert not _check(result, "raw_impressions", "quarantine_share_below_threshold")
    # The request was read and applied: person-2's rows are gone from day 1, and day 2's
    # was never stored.
    assert _check(result, "deletion_requests", "rows_reconcile")
    assert dg.AssetKey("user_erasure") in {
        m.asset_key for m in result.asset_materializations_for_node("user_erasure")}
    assert _query(tmp_path, "SELECT count(*) FROM raw.impressions WHERE user_key IN "
                            "(SELECT user_key FROM raw.deletion_requests)") == [(0,)]
    assert _query(tmp_path, "SELECT count(*) FROM raw.impressions WHERE impression_id IN "
                            "('i2', 'i2-day2')") == [(0,)]
    # Everyone else stays.
    assert _query(tmp_path, "SELECT count(*) FROM raw.impressions WHERE impression_id = 'i1'") == [(1,)]
    # The gate still reads the failure: the day is held.
    assert _query(tmp_path, "SELECT passed FROM monitor.check_results WHERE partition_date = ? "
                            "AND asset = 'raw_impressions' "
                            "AND check_name = 'quarantine_share_below_threshold'", [DAY2]) == [(False,)]
