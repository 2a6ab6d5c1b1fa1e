"""The drift alarm on a real small world: normal days stay quiet, a change of taste and
a catalogue drop ask for a retrain within one rotation (real rotations, a real DuckDB
file)."""

import json

import dagster as dg
import pytest

from flywheel_assets import warehouse
from flywheel_assets.settings import Settings
from flywheel_assets.simulation.config import Scenario, WorldConfig
from flywheel_assets_tests.helpers import turn_the_wheel

# Seven days of real rotations (about three minutes): with the end-to-end tests.
pytestmark = pytest.mark.slow

CONFIG = WorldConfig(n_users=800, n_items=300, requests_per_day=4000, pool_size=20)
NORMAL = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
DRIFT_DAY, NEXT_DAY, DROP_DAY = "2026-01-05", "2026-01-06", "2026-01-07"


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("drift_alarm")
    instance = dg.DagsterInstance.ephemeral()
    turn_the_wheel(data_dir, CONFIG, NORMAL, instance)
    drifted = CONFIG.replace(scenarios=(Scenario("taste_drift", 5),))
    turn_the_wheel(data_dir, drifted, [DRIFT_DAY, NEXT_DAY], instance)
    dropped = drifted.replace(scenarios=(*drifted.scenarios, Scenario("catalog_drop", 7)))
    turn_the_wheel(data_dir, dropped, [DROP_DAY], instance)
    with warehouse.connect(Settings.from_env(data_dir).warehouse_path, read_only=True) as conn:
        rows = conn.execute("SELECT partition_date::VARCHAR, dataset_drift, columns "
                            "FROM monitor.drift_reports ORDER BY 1").fetchall()
    return {day: (retrain, json.loads(details)) for day, retrain, details in rows}


def test_normal_days_ask_for_no_retrain(reports):
    for day in NORMAL[1:]:
        retrain, details = reports[day]
        assert not retrain, (day, [c for c in details["columns"] if c["drifted"]])
    # From the third day on, thresholds come from the reference's own normal days.
    _, details = reports[NORMAL[2]]
    assert details["calibrated"] and details["reference_days"] == NORMAL[:2]
    thresholds = {c["column"]: c["threshold"] for c in details["columns"]}
    assert len(set(round(t, 6) for t in thresholds.values())) > 1


def test_a_change_of_taste_asks_for_a_retrain_within_one_rotation(reports):
    """The device mix and tastes change for good on DRIFT_DAY: it drifts that day, and
    a retrain is asked for that day (a large drift) or the next (drift persisting)."""
    retrain, details = reports[DRIFT_DAY]
    drifted = {c["column"] for c in details["columns"] if c["drifted"]}
    assert details["drifted"] and "device" in drifted
    assert details["reference_days"] == NORMAL
    if not retrain:
        retrain_next, next_details = reports[NEXT_DAY]
        assert retrain_next and next_details["persistent"]
        # The drifted day is not part of the next day's normal reference.
        assert DRIFT_DAY not in next_details["reference_days"]


def test_a_catalogue_drop_asks_for_a_retrain_the_day_it_lands(reports):
    retrain, details = reports[DROP_DAY]
    assert retrain and details["large"]
    assert "catalogue_item_age_days" in details["drifted_columns"]


def _fill(conn, reports: dict[str, tuple[bool, object]]):
    """Feedback on 2026-01-01..10 and the given drift reports."""
    for day in range(1, 11):
        conn.execute("INSERT INTO curated.feedback_events (partition_date, request_id) "
                     "VALUES (?, ?)", [f"2026-01-{day:02d}", f"r{day}"])
    for day, (retrain, details) in reports.items():
        conn.execute("INSERT INTO monitor.drift_reports (partition_date, dataset_drift, columns) "
                     "VALUES (?, ?, ?)", [day, retrain, json.dumps(details)])


def test_the_reference_skips_drifted_days_and_restarts_after_a_retrain(tmp_path):
    from flywheel_assets.monitor import drift_report as dr

    with warehouse.connect(Settings.from_env(tmp_path).warehouse_path) as conn:
        _fill(conn, {"2026-01-03": (False, {"drifted": True, "calibrated": True}),
                     "2026-01-06": (True, {"drifted": True, "large": True}),
                     "2026-01-02": (False, ["a report of an older version"])})
        assert dr.reference_window(conn, "2026-01-05", 7) == ["2026-01-01", "2026-01-02",
                                                              "2026-01-04"]
        # After the retrain asked for on the 6th, the reference starts there.
        assert dr.reference_window(conn, "2026-01-07", 7) == ["2026-01-06"]
        assert dr.reference_window(conn, "2026-01-09", 7) == ["2026-01-06", "2026-01-07",
                                                              "2026-01-08"]


def test_persistence_is_the_same_column_day_after_day(tmp_path):
    from flywheel_assets.monitor import drift_report as dr

    with warehouse.connect(Settings.from_env(tmp_path).warehouse_path) as conn:
        _fill(conn, {"2026-01-04": (False, {"drifted": True, "calibrated": True,
                                            "drifted_columns": ["hour"]}),
                     "2026-01-05": (False, ["a report of an older version"])})
        assert dr._persisting(conn, "2026-01-05", 2, {"hour", "device"}) == {"hour"}
        assert dr._persisting(conn, "2026-01-05", 2, {"device"}) == set()
        # Yesterday's report is of an older version: nothing persists, nothing crashes.
        assert dr._persisting(conn, "2026-01-06", 2, {"hour"}) == set()
