"""The real daemon reacts to drift by itself: the webserver and daemon on 127.0.0.1
with a temporary DAGSTER_HOME, the world's taste_drift switched on for one day (see
the `live_instance` fixture in conftest)."""

import json

import duckdb

from flywheel_assets.core import warehouse
from flywheel_assets.simulation.drill import wait_for


def test_the_drift_sensor_retrains_and_the_gate_decides(live_instance):
    outcome = live_instance["outcome"]
    # The landing sensor ran the day's rotation, which found the drift ...
    assert outcome["rotation_runs"] and all(s == "SUCCESS" for _, s in outcome["rotation_runs"])
    assert outcome["drift_share"] >= live_instance["settings"].drift_share_threshold
    # ... and the drift sensor launched a retrain, tagged with its trigger and reason.
    assert outcome["retrain_status"] == "SUCCESS"
    assert outcome["retrain_tags"]["trigger"] == "drift"
    assert "drift share" in outcome["retrain_reason"] and "device" in outcome["retrain_reason"]
    # The retrained candidate was evaluated and the gate recorded its decision.
    decision = outcome["decision"]
    assert decision and decision["reasons"]
    assert outcome["evaluated_candidate"] == decision["candidate"]
    assert outcome["drift_to_decision_seconds"] > 0


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
