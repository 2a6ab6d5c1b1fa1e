"""The real daemon reacts to drift by itself: the webserver and daemon on 127.0.0.1
with a temporary DAGSTER_HOME, the world's taste_drift switched on for one day (see
the `live_instance` fixture in conftest)."""

import datetime as dt
import json

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
