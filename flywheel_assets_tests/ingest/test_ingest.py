"""Ingestion: bad rows quarantined (exactly those, with reasons), nothing lost, user ids
hashed, blocking checks, idempotent re-runs — on a real DuckDB file through Dagster."""

import csv
import gzip
import json
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel_assets import warehouse
from flywheel_assets.curate import assets as curate_assets
from flywheel_assets.definitions import build_definitions
from flywheel_assets.ingest import assets as ingest_assets
from flywheel_assets.ingest import checks as ingest_checks
from flywheel_assets.ingest.contract import RAW_ASSETS as RAW_TABLES
from flywheel_assets.ingest.pseudonymise import user_key
from flywheel_assets.resources import FlywheelResource
from flywheel_assets.settings import DEV_PSEUDONYM_SECRET

DAY = "2026-01-01"
T = "2026-01-01T10:00:00Z"
INGEST = ["raw_impressions", "raw_candidates", "raw_interactions", "raw_users", "raw_items",
          "quarantined_events",
          "deletion_requests"]


def _imp(i, **over):
    row = dict(impression_id=f"i{i}", request_id="r1", ts=T, user_id=f"person-{i}",
               item_id=f"item_{i}", position=i, propensity=0.5, policy_version="popularity",
               device="mobile")
    row.update(over)
    return row


def _write_day(landing: Path, impressions_parquet, impressions_jsonl, interactions_csv,
               success=True):
    imp = landing / "impressions" / f"date={DAY}"
    inter = landing / "interactions" / f"date={DAY}"
    imp.mkdir(parents=True)
    inter.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(impressions_parquet), imp / "part-0.parquet")
    with gzip.open(imp / "part-1.jsonl.gz", "wt") as fh:
        for row in impressions_jsonl:
            fh.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    with open(inter / "events.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        for row in interactions_csv:
            w.writerow(row)
    if success:
        (imp / "_SUCCESS").touch()
        (inter / "_SUCCESS").touch()


# Each bad row and the (column, reason prefix) it must be quarantined with.
# (A position beyond any integer type must be one quarantined row, not a failed day.)
BAD_IMPRESSIONS_JSONL = [
    (_imp(10, position="first"), ("position", "not a number")),
    (_imp(11, propensity=0), ("propensity", "out of range")),
    (_imp(12, propensity=1.5), ("propensity", "out of range")),
    (_imp(13, ts="yesterday"), ("ts", "not an ISO-8601 timestamp")),
    (_imp(14, ts="2026-01-02T00:30:00+02:00"), None),  # = 2026-01-01T22:30Z: good
    (_imp(15, ts="2026-01-02T01:00:00Z"), ("ts", "outside partition")),
    (_imp(16, request_id=None), ("request_id", "missing")),
    (_imp(20, user_id=None), None),  # anonymous traffic: valid, the request is the unit
    (_imp(17, position=2.5), ("position", "not an integer")),
    (_imp(19, position=3e19), ("position", "out of range")),
    ('{"impression_id": "i18", ', (None, "invalid JSON")),
    ("[1, 2]", (None, "not a JSON object")),
    (_imp(1), ("impression_id", "duplicate impression_id")),  # replay of the parquet row
]
# Enough good rows that the bad ones stay under the 5% quarantine threshold.
GOOD_PARQUET = [_imp(i) for i in range(1, 5)] + [_imp(i) for i in range(100, 350)]
INTERACTIONS = [
    ["event_id", "impression_id", "ts", "signal", "value"],
    ["e1", "i1", T, "complete", "0.95"],          # good
    ["e2", "i2", T, "skip", ""],                  # good (value optional)
    ["e3", "i3", T, "tap", ""],                   # a signal outside the vocabulary
    ["e4", "i3", T, "partial", "-1"],             # negative value
    ["e5", "i4", T, "save"],                      # wrong number of fields
    ["e1", "i1", T, "complete", "0.95"],          # duplicate event id
    ["", "i4", T, "save", "1"],                   # missing id
] + [[f"g{i}", f"i{i}", T, "partial", "0.3"] for i in range(100, 300)]
EXPECTED_INTERACTION_REJECTS = {4: ("signal", "not one of"), 5: ("value", "out of range"),
                                6: (None, "expected 5 fields"), 7: ("event_id", "duplicate"),
                                8: ("event_id", "missing")}


@pytest.fixture
def mixed_day(tmp_path):
    _write_day(tmp_path / "landing", GOOD_PARQUET, [r for r, _ in BAD_IMPRESSIONS_JSONL],
               INTERACTIONS)
    return tmp_path


def _materialize(data_dir: Path, selection=INGEST):
    """Materialise the ingestion assets (+ their checks) for DAY on a real DuckDB file."""
    return dg.materialize(
        [ingest_assets.landing_day, curate_assets.feedback_events, ingest_checks.rows_reconcile,
         ingest_checks.landing_files_read, ingest_checks.quarantine_share_below_threshold,
         ingest_checks.accepted_rows_expectations],
        partition_key=DAY, resources={"flywheel": FlywheelResource(data_dir=str(data_dir))},
        raise_on_error=False, selection=selection)


def _query(data_dir: Path, sql: str, params=None):
    with warehouse.connect(data_dir / "warehouse.duckdb") as conn:
        return conn.execute(sql, params or []).fetchall()


def test_exactly_the_bad_rows_are_quarantined_with_reasons(mixed_day):
    result = _materialize(mixed_day)
    assert result.success
    got = {(r[0], r[1]): (r[2], r[3]) for r in _query(mixed_day, """
        SELECT source_file, source_row, column_name, reason FROM raw.quarantined_events""")}
    expected = {}
    for line, (_, rejection) in enumerate(BAD_IMPRESSIONS_JSONL, start=1):
        if rejection:
            expected[(f"impressions/date={DAY}/part-1.jsonl.gz", line)] = rejection
    for line, rejection in EXPECTED_INTERACTION_REJECTS.items():
        expected[(f"interactions/date={DAY}/events.csv", line)] = rejection
    assert set(got) == set(expected)
    for where, (column, reason) in expected.items():
        assert got[where][0] == column, where
        assert got[where][1].startswith(reason), (where, got[where][1])
    accepted = {r[0] for r in _query(mixed_day, "SELECT impression_id FROM raw.impressions")}
    assert accepted == {f"i{i}" for i in [1, 2, 3, 4, 14, 20, *range(100, 350)]}
    # Nothing lost: read = accepted + quarantined, and the check says so.
    evaluations = {(e.asset_key.to_user_string(), e.check_name): e
                   for e in result.get_asset_check_evaluations()}
    reconcile = evaluations[("raw_impressions", "rows_reconcile")]
    assert reconcile.passed
    assert reconcile.metadata["rows_read_less_erased"].value == len(GOOD_PARQUET) + len(BAD_IMPRESSIONS_JSONL)
    assert reconcile.metadata["quarantined"].value == 11
    assert all(e.passed for e in evaluations.values())


def test_user_ids_never_reach_the_warehouse(tmp_path):
    tricky = [
        _imp(400, user_id="  person-1 "),   # padded: the same person as person-1
        _imp(401, user_id="   "),            # blank: anonymous, not a user
        '["person-402", 1]',                # not an object, but holds an id
    ]
    _write_day(tmp_path / "landing", GOOD_PARQUET, tricky, INTERACTIONS[:2])
    mixed_day = tmp_path
    _materialize(mixed_day)
    keys = {r[0]: r[1] for r in _query(mixed_day, "SELECT impression_id, user_key FROM raw.impressions")}
    assert keys["i400"] == keys["i1"] == user_key("person-1", DEV_PSEUDONYM_SECRET)
    assert keys["i401"] is None
    keys = {r[0] for r in _query(mixed_day, "SELECT user_key FROM raw.impressions")}
    assert user_key("person-1", DEV_PSEUDONYM_SECRET) in keys
    dump = " ".join(str(r) for r in _query(mixed_day, "SELECT * FROM raw.quarantined_events"))
    dump += " ".join(str(r) for r in _query(mixed_day, "SELECT * FROM raw.impressions"))
    assert "person-" not in dump
    assert len(_query(mixed_day, "SELECT * FROM raw.quarantined_events")) == 1


def test_gx_suite_runs_on_accepted_rows_and_blocks(mixed_day):
    result = _materialize(mixed_day)
    gx_checks = [e for e in result.get_asset_check_evaluations()
                 if e.check_name == "accepted_rows_expectations"]
    assert {e.asset_key.to_user_string() for e in gx_checks} >= {"raw_impressions", "raw_interactions"}
    failed = [(e.asset_key.to_user_string(), e.metadata["failures"].value)
              for e in gx_checks if not e.passed]
    assert not failed, failed
    assert all(e.metadata["expectations_evaluated"].value >= 5 for e in gx_checks)
    specs = [s for c in build_definitions(str(mixed_day)).asset_checks for s in c.check_specs
             if s.name == "accepted_rows_expectations"]
    # Blocking on every raw table but the deletion requests (their erasure must apply).
    assert len(specs) == len(RAW_TABLES)
    assert {s.asset_key.to_user_string() for s in specs if not s.blocking} == {"deletion_requests"}


def test_too_many_bad_rows_fail_the_blocking_check_naming_file_column_example(tmp_path):
    bad = [_imp(100 + i, propensity=7) for i in range(5)]
    _write_day(tmp_path / "landing", GOOD_PARQUET[:4], bad, INTERACTIONS[:2])
    result = _materialize(tmp_path, selection=[*INGEST, "feedback_events"])
    share = next(e for e in result.get_asset_check_evaluations()
                 if e.check_name == "quarantine_share_below_threshold"
                 and e.asset_key.to_user_string() == "raw_impressions")
    assert not share.passed
    assert f"impressions/date={DAY}/part-1.jsonl.gz" in share.description
    assert "propensity" in share.description and "row 1" in share.description
    # Blocking: the downstream asset did not run.
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()
                    for m in [m.event_specific_data.materialization]}
    assert "feedback_events" not in materialized


def test_rematerialising_a_partition_gives_identical_tables(mixed_day):
    tables = ["raw.impressions", "raw.interactions", "raw.quarantined_events", "raw.landing_files"]

    def snapshot():
        return {t: sorted(_query(mixed_day, f"SELECT * FROM {t}")) for t in tables}

    _materialize(mixed_day)
    first = snapshot()
    _materialize(mixed_day)
    assert snapshot() == first
    assert all(first[t] for t in tables)


def test_incomplete_day_is_refused_and_writes_nothing(tmp_path):
    _write_day(tmp_path / "landing", GOOD_PARQUET, [], INTERACTIONS[:2], success=False)
    result = _materialize(tmp_path)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "_SUCCESS" in str(failure.event_specific_data.error)
    assert _query(tmp_path, "SELECT count(*) FROM raw.impressions") == [(0,)]


def test_an_interrupted_ingest_leaves_the_previous_partition(mixed_day, monkeypatch):
    _materialize(mixed_day)
    before = _query(mixed_day, "SELECT count(*) FROM raw.impressions")
    from flywheel_assets.ingest import load as ingest

    real_write = ingest._write
    written = []

    def write_then_die_on_interactions(conn, contract, day, report, *rest):
        if contract.stream == "interactions":
            raise RuntimeError("killed half-way")
        written.append(contract.stream)
        return real_write(conn, contract, day, report, *rest)

    monkeypatch.setattr(ingest, "_write", write_then_die_on_interactions)
    _fails_with_a_new_file(mixed_day, "killed half-way")
    assert "impressions" in written  # written inside the transaction, then rolled back
    assert _query(mixed_day, "SELECT count(*) FROM raw.impressions") == before


def _fails_with_a_new_file(day_dir: Path, message: str) -> None:
    """Ingest the day again with a new landing file (a complete run would add impression
    i900): the step must fail with ``message`` and i900 must not be stored."""
    extra = day_dir / "landing" / "impressions" / f"date={DAY}" / "part-2.parquet"
    pq.write_table(pa.Table.from_pylist([_imp(900)]), extra)
    result = _materialize(day_dir)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert message in str(failure.event_specific_data.error)
    assert _query(day_dir, "SELECT count(*) FROM raw.impressions WHERE impression_id = 'i900'") == [(0,)]


@pytest.mark.parametrize("commit_rows", [1, 10**9])
def test_a_file_that_fails_while_staged_leaves_the_previous_partition(mixed_day, monkeypatch,
                                                                     commit_rows):
    # Every stream is staged (committing as it goes) before the ingest's transaction
    # opens: a read that fails half-way through staging must still write nothing, with
    # the staged rows committed (a commit after every batch) or not (none before the end).
    _materialize(mixed_day)
    tables = ("raw.impressions", "raw.interactions", "raw.quarantined_events")
    before = [_query(mixed_day, f"SELECT count(*) FROM {t}") for t in tables]
    from flywheel_assets.ingest import load as ingest

    real_read = ingest.read_landing_file

    def read_then_die_on_interactions(path, *args, **kwargs):
        yield from real_read(path, *args, **kwargs)
        if "interactions" in path.parts:
            raise OSError("disk gone half-way")

    monkeypatch.setattr(ingest, "STAGE_COMMIT_ROWS", commit_rows)
    monkeypatch.setattr(ingest, "read_landing_file", read_then_die_on_interactions)
    _fails_with_a_new_file(mixed_day, "disk gone half-way")
    assert [_query(mixed_day, f"SELECT count(*) FROM {t}") for t in tables] == before


def test_columns_beyond_the_contract_are_kept_not_dropped(tmp_path):
    """A product's own columns (a page, a price) land in `extras`, whatever the format."""
    parquet = [_imp(1, page="home", price=9.5, Email="a@b.c"),
               _imp(2, page="search", price=12.0, ipAddress="10.0.0.9")]
    jsonl = [_imp(3, page="home", price=3, tags=["a", "b"]), _imp(4)]
    # An identifier outside the contract is never stored (only `user_id` of impressions
    # is pseudonymised).
    interactions = [["event_id", "impression_id", "ts", "signal", "app_build", "user_id"],
                    ["e1", "i1", T, "complete", "7.1.2", "person-1"]]
    _write_day(tmp_path / "landing", parquet, jsonl, interactions)
    assert _materialize(tmp_path).success
    extras = dict(_query(tmp_path, "SELECT impression_id, extras FROM raw.impressions"))
    assert json.loads(extras["i1"]) == {"page": "home", "price": "9.5"}
    assert json.loads(extras["i3"]) == {"page": "home", "price": 3, "tags": ["a", "b"]}
    assert extras["i4"] is None
    assert _query(tmp_path, "SELECT extras FROM raw.interactions") == [('{"app_build": "7.1.2"}',)]
    assert _query(tmp_path, "SELECT count(*) FROM raw.quarantined_events") == [(0,)]
    dump = str(_query(tmp_path, "SELECT * FROM raw.impressions")) + str(
        _query(tmp_path, "SELECT * FROM raw.interactions"))
    assert "a@b.c" not in dump and "person-1" not in dump and "10.0.0.9" not in dump
