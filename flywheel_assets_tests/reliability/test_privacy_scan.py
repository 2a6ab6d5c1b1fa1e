"""No raw user id anywhere the product writes: after two rotations of a small simulated
world (a deletion request, a quarantined row carrying a user id), every text column of
every warehouse table, every report, labelling export and model file, and every event
and metadata value in the Dagster instance is scanned for the world's user ids. The
landing zone, the world's own files and the annotators' inbox are the inputs, not
scanned."""

import re

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flywheel_assets import warehouse
from flywheel_assets_tests.helpers import rotate_a_tampered_day
from flywheel_assets_tests.test_rotation_small_world import CONFIG

DAYS = ["2026-01-01", "2026-01-02"]
RAW_ID = re.compile(r"user_\d{6}")
INPUTS = ("landing", "world", "inbox")


def _add_a_bad_row(landing, day: str) -> None:
    """A bad row (an impossible propensity) with a user id: quarantined, its id hashed."""
    folder = landing / "impressions" / f"date={day}"
    row = pq.read_table(next(folder.glob("*.parquet"))).slice(0, 1).to_pylist()[0]
    row.update(impression_id="bad-1", propensity=7.0)
    pq.write_table(pa.Table.from_pylist([row]), folder / "part-bad.parquet")


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    settings, instance, _ = rotate_a_tampered_day(tmp_path_factory.mktemp("privacy"), CONFIG,
                                                  DAYS, _add_a_bad_row)
    return settings, instance


@pytest.mark.slow
def test_the_inputs_do_hold_raw_ids_and_the_quarantine_holds_the_bad_row(rotated):
    settings, _ = rotated
    landed = (settings.landing_dir / "users" / f"date={DAYS[1]}" / "users.csv").read_text()
    assert RAW_ID.search(landed)  # else the scan below could pass on nothing
    with warehouse.connect(settings.warehouse_path) as conn:
        record = conn.execute("SELECT record FROM raw.quarantined_events WHERE "
                              "source_file LIKE '%part-bad.parquet'").fetchall()
        deletions = conn.execute("SELECT count(*) FROM raw.deletion_requests").fetchall()
    assert len(record) == 1 and '"user_key":"u_' in record[0][0].replace(" ", "")
    assert deletions[0][0] > 0


@pytest.mark.slow
def test_no_warehouse_table_holds_a_raw_user_id(rotated):
    settings, _ = rotated
    found = []
    with warehouse.connect(settings.warehouse_path) as conn:
        # Every column that can hold text: VARCHAR, lists, structs, maps, JSON.
        columns = conn.execute(
            "SELECT table_schema, table_name, column_name FROM information_schema.columns "
            "WHERE table_schema NOT IN ('information_schema', 'pg_catalog') AND data_type "
            "NOT SIMILAR TO '(BIGINT|INTEGER|SMALLINT|TINYINT|HUGEINT|DOUBLE|FLOAT|REAL|"
            "BOOLEAN|DATE|TIME|TIMESTAMP|DECIMAL|UBIGINT|UINTEGER|INTERVAL).*'").fetchall()
        for schema, table, column in columns:
            n = conn.execute(f'SELECT count(*) FROM "{schema}"."{table}" WHERE regexp_matches('
                             f"CAST(\"{column}\" AS VARCHAR), 'user_[0-9]{{6}}')").fetchall()[0][0]
            if n:
                found.append((f"{schema}.{table}.{column}", n))
    assert len(columns) > 50 and any(c == "signals" for _, _, c in columns) and found == []


@pytest.mark.slow
def test_no_file_the_product_writes_holds_a_raw_user_id(rotated):
    settings, _ = rotated
    scanned, found = 0, []
    for path in settings.data_dir.rglob("*"):
        relative = path.relative_to(settings.data_dir)
        if not path.is_file() or any(p in INPUTS for p in relative.parts) or \
                path.suffix == ".duckdb" or "dagster_home" in relative.parts:
            continue
        scanned += 1
        if RAW_ID.search(path.read_bytes().decode("latin-1")):
            found.append(str(relative))
    assert scanned > 10 and found == []


@pytest.mark.slow
def test_no_dagster_event_or_metadata_holds_a_raw_user_id(rotated):
    _, instance = rotated
    runs = instance.get_runs()
    events = [dg.serialize_value(e) for r in runs for e in instance.all_logs(r.run_id)]
    assert len(runs) >= 2 and len(events) > 100
    assert [e[:200] for e in events if RAW_ID.search(e)] == []
