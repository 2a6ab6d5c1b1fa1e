"""The real daemon reacts to drift by itself: the webserver and daemon on 127.0.0.1
with a temporary DAGSTER_HOME on a real PostgreSQL server (the Postgres-backed
instance), the world's taste_drift switched on for one day (see the `live_instance`
fixture in conftest)."""

import datetime as dt
import json

import dagster as dg
import duckdb
import pytest

from flywheel_assets import warehouse
from flywheel_assets.harness.drill import FINISHED, runs_with_tag, wait_for
from flywheel_assets.train import model_store
from flywheel_assets_tests.conftest import LIVE_TIMEOUT_SECONDS

pytestmark = pytest.mark.slow


def test_the_drift_sensor_retrains_and_the_gate_decides(live_instance):
    outcome, services = live_instance["outcome"], live_instance["services"]
    # The landing sensor ran the day's rotation, which found the drift ...
    rotations = wait_for(lambda: [r for r in runs_with_tag(services, "trigger", "landing")
                                  if r["status"] in FINISHED] or None, 120,
                         what="the landing-triggered rotation to finish")
    assert [r["status"] for r in rotations] == ["SUCCESS"]
    # (taste_drift moves the device mix by far more than two normal days ever moved it)
    assert "device" in outcome["drifted_columns"]
    # ... and the drift sensor launched a retrain, tagged with its trigger and reason.
    assert outcome["retrain_status"] == "SUCCESS"
    assert outcome["retrain_tags"]["trigger"] == "drift"
    assert outcome["retrain_reason"].startswith(f"drift on {outcome['date']}")
    assert "device" in outcome["retrain_reason"]
    # The retrained candidate (2-day window, the drifted day's first part included) was
    # evaluated, and the gate recorded its decision about it.
    decision = outcome["decision"]
    assert decision and decision["reasons"]
    assert outcome["evaluated_candidate"] == decision["candidate"]
    settings = live_instance["settings"]
    card = model_store.load_card(settings.models_dir, decision["candidate"])
    previous_day = (dt.date.fromisoformat(outcome["date"]) - dt.timedelta(days=1)).isoformat()
    assert str(card["window_start"])[:10] == previous_day
    assert str(card["window_end"])[:10] == outcome["date"]
    assert 0 < outcome["drift_to_decision_seconds"] < LIVE_TIMEOUT_SECONDS


def test_the_drift_alert_is_recorded(live_instance):
    """The drift sensor also asked record_alert_job to record the drift; other sensors
    may have alerted too (the quality sensor often does on a drifted day)."""
    settings, date = live_instance["settings"], live_instance["outcome"]["date"]

    def drift_alerts():
        try:
            with warehouse.connect(settings.warehouse_path, read_only=True) as conn:
                return conn.execute("SELECT severity, details, webhook_status FROM monitor.alerts "
                                    "WHERE source = 'drift_sensor' AND partition_date = ?",
                                    [date]).fetchall()
        except duckdb.Error:  # a run may still hold the writer's lock
            return None
    rows = wait_for(drift_alerts, 180, interval=2.0, what=f"the drift alert of {date}")
    assert len(rows) == 1
    severity, details, webhook = rows[0]
    assert severity == "warning" and webhook == "not_configured"
    details = json.loads(details)
    assert details["dataset_drift"] is True and "device" in details["drifted_columns"]


def test_the_loop_ran_on_the_postgres_instance(live_instance, monkeypatch):
    """The live instance is the Postgres-backed one (FLYWHEEL_DAGSTER_INSTANCE=postgres):
    the runs of the drifted day and the sensor ticks that started them are in the
    PostgreSQL server, read back both through Dagster and straight from its tables, and
    DAGSTER_HOME holds no SQLite storage at all."""
    import psycopg2
    from dagster._core.scheduler.instigation import InstigatorType

    from flywheel_assets.settings import POSTGRES_URL_ENV, instance_kind

    settings, outcome = live_instance["settings"], live_instance["outcome"]
    home, url = settings.dagster_home, live_instance["postgres_url"]
    assert instance_kind(home / "dagster.yaml") == "postgres"
    monkeypatch.setenv(POSTGRES_URL_ENV, url)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storages = {type(instance.run_storage).__name__,
                    type(instance.event_log_storage).__name__,
                    type(instance.schedule_storage).__name__}
        assert storages == {"PostgresRunStorage", "PostgresEventLogStorage",
                            "PostgresScheduleStorage"}
        rotation_ids = {run_id for run_id, status in outcome["rotation_runs"]
                        if status == "SUCCESS"}
        assert rotation_ids, outcome["rotation_runs"]
        launched_by = {}
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id):
                for run_id in tick.run_ids:
                    launched_by[run_id] = state.instigator_name
    # Sensor ticks in the schedule storage launched the day's rotation and the retrain.
    assert {launched_by.get(run_id) for run_id in rotation_ids} == {"landing_sensor"}
    assert launched_by.get(outcome["retrain_run"]) == "drift_sensor"
    # The same runs, read from the server's own tables.
    with psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://")) as conn:
        with conn.cursor() as cursor:
            cursor.execute("SELECT run_id, pipeline_name, status FROM runs")
            runs = {run_id: (job, status) for run_id, job, status in cursor.fetchall()}
            cursor.execute("SELECT count(*) FROM job_ticks")
            ticks = cursor.fetchone()[0]
            cursor.execute("SELECT count(*) FROM event_logs WHERE run_id = %s",
                           [outcome["retrain_run"]])
            retrain_events = cursor.fetchone()[0]
    assert runs[outcome["retrain_run"]] == ("retrain_job", "SUCCESS")
    assert all(runs[run_id] == ("daily_rotation_job", "SUCCESS") for run_id in rotation_ids)
    # the warm-up's in-process runs went to the server too: three jobs a day, two days
    assert sum(job == "daily_rotation_job" for job, _ in runs.values()) >= 3
    assert ticks >= 2 and retrain_events > 0
    assert not sorted(home.rglob("*.db")), "an SQLite storage was made under DAGSTER_HOME"
