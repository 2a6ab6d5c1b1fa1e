"""The real daemon reacts to drift by itself: the webserver and daemon on 127.0.0.1
with a temporary DAGSTER_HOME, the world's taste_drift switched on for one day (see
the `live_instance` fixture in conftest)."""

import json

import duckdb

from flywheel_assets.core import warehouse
from flywheel_assets.simulation.drill import runs_with_tag, wait_for


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
    services, settings = live_instance["services"], live_instance["settings"]
    alert_runs = wait_for(lambda: [r for r in runs_with_tag(services, "trigger", "drift")
                                   if r["jobName"] == "record_alert_job"
                                   and r["status"] == "SUCCESS"], 120, what="the alert run")
    assert len(alert_runs) == 1

    def read():
        try:
            with warehouse.connect(settings.warehouse_path, read_only=True) as conn:
                return conn.execute("SELECT source, severity, partition_date::VARCHAR, details "
                                    "FROM monitor.alerts").fetchall()
        except duckdb.Error:  # a run may still hold the writer's lock
            return None
    rows = wait_for(read, 60, interval=1.0, what="monitor.alerts")
    assert [(r[0], r[1], r[2]) for r in rows] == [("drift_sensor", "warning",
                                                    live_instance["outcome"]["date"])]
    assert json.loads(rows[0][3])["dataset_drift"] is True
