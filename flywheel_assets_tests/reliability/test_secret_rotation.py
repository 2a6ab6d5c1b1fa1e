"""A deletion request survives a rotation of the pseudonymisation secret: with the old
secret in `FLYWHEEL_PSEUDONYM_PREVIOUS_SECRETS`, an old day re-ingested under the new
secret does not bring an erased user back, and a request that comes in under the new
secret erases rows stored under the old one. Without it, both go wrong (shown too, so
that the tests cannot pass by accident). On a real DuckDB file through Dagster."""

import csv

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel_assets.ingest import assets as ingest_assets
from flywheel_assets.ingest.pseudonymise import user_key
from flywheel_assets.resources import FlywheelResource
from flywheel_assets_tests.ingest.test_ingest import (DAY, GOOD_PARQUET, INTERACTIONS, _imp,
                                                      _query, _write_day)

DAY2 = "2026-01-02"
OLD, NEW = "old-secret-of-the-product-2025", "new-secret-of-the-product-2026"


def _ingest(data_dir, day: str) -> None:
    assert dg.materialize([ingest_assets.landing_day, ingest_assets.user_erasure],
                          partition_key=day,
                          resources={"flywheel": FlywheelResource(data_dir=str(data_dir))}).success


def _land_deletion(landing, person: str) -> None:
    """Day 2: one impression, no interaction, and a deletion request for ``person``."""
    for stream in ("impressions", "interactions", "deletions"):
        (landing / stream / f"date={DAY2}").mkdir(parents=True)
        (landing / stream / f"date={DAY2}" / "_SUCCESS").touch()
    pq.write_table(pa.Table.from_pylist([_imp(990, ts="2026-01-02T09:00:00Z")]),
                   landing / "impressions" / f"date={DAY2}" / "part-0.parquet")
    with open(landing / "interactions" / f"date={DAY2}" / "events.csv", "w", newline="") as fh:
        csv.writer(fh).writerow(INTERACTIONS[0])
    with open(landing / "deletions" / f"date={DAY2}" / "deletions.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["user_id", "requested_at"], [person, "2026-01-02T08:00:00Z"]])


def _stored(data_dir, impression: str) -> bool:
    return _query(data_dir, "SELECT count(*) FROM raw.impressions WHERE impression_id = ?",
                  [impression]) == [(1,)]


@pytest.fixture
def landed(tmp_path, monkeypatch):
    _write_day(tmp_path / "landing", GOOD_PARQUET, [], INTERACTIONS)
    monkeypatch.setenv("FLYWHEEL_PSEUDONYM_SECRET", OLD)
    monkeypatch.delenv("FLYWHEEL_PSEUDONYM_PREVIOUS_SECRETS", raising=False)
    return tmp_path


@pytest.mark.parametrize("previous", [OLD, None])
def test_an_erased_user_stays_erased_when_an_old_day_is_re_ingested_under_a_new_secret(
        landed, monkeypatch, previous):
    _ingest(landed, DAY)
    assert _stored(landed, "i1")
    _land_deletion(landed / "landing", "person-1")
    _ingest(landed, DAY2)  # the request, under the old secret, erases day 1's rows
    assert not _stored(landed, "i1")
    monkeypatch.setenv("FLYWHEEL_PSEUDONYM_SECRET", NEW)
    if previous:
        monkeypatch.setenv("FLYWHEEL_PSEUDONYM_PREVIOUS_SECRETS", previous)
    _ingest(landed, DAY)  # day 1 again, now hashed under the new secret
    # With the old secret named, person-1 stays out; without it, person-1 is back.
    assert _stored(landed, "i1") is (previous is None)
    assert _stored(landed, "i2")  # everyone else is ingested as ever


@pytest.mark.parametrize("previous", [OLD, None])
def test_a_request_under_a_new_secret_erases_rows_stored_under_the_old_one(
        landed, monkeypatch, previous):
    _ingest(landed, DAY)
    assert _stored(landed, "i2")
    monkeypatch.setenv("FLYWHEEL_PSEUDONYM_SECRET", NEW)
    if previous:
        monkeypatch.setenv("FLYWHEEL_PSEUDONYM_PREVIOUS_SECRETS", previous)
    _land_deletion(landed / "landing", "person-2")
    _ingest(landed, DAY2)
    assert _stored(landed, "i2") is (previous is None)
    if previous:
        # The tombstone under the new secret, its alias under the old one; no raw id.
        assert _query(landed, "SELECT user_key FROM raw.deletion_requests") == [
            (user_key("person-2", NEW),)]
        assert _query(landed, "SELECT alias_key FROM raw.deletion_request_keys") == [
            (user_key("person-2", OLD),)]
