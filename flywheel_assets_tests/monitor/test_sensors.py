"""Sensors: the first tick requests a run with the right tags, the second skips; alerts
land in monitor.alerts through record_alert_job."""

import os
import time

import dagster as dg
import pytest

from flywheel_assets import warehouse
from flywheel_assets.definitions import build_definitions
from flywheel_assets.monitor import sensors
from flywheel_assets.monitor.jobs import record_alert_job
from flywheel_assets.resources import FlywheelResource
from flywheel_assets.settings import Settings


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def _tick(sensor, instance, data_dir, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources={
            "flywheel": FlywheelResource(data_dir=str(data_dir))}) as context:
        return sensor(context)


def _land(data_dir, day, streams=("impressions", "interactions")):
    for stream in streams:
        folder = data_dir / "landing" / stream / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "_SUCCESS").touch()


def test_landing_sensor_requests_each_complete_day_once(instance, tmp_path):
    _land(tmp_path, "2026-01-03")
    _land(tmp_path, "2026-01-04", streams=("impressions",))  # interactions not finished
    first = _tick(sensors.landing_sensor, instance, tmp_path)
    assert [r.partition_key for r in first.run_requests] == ["2026-01-03"]
    request = first.run_requests[0]
    assert request.tags["trigger"] == "landing" and "2026-01-03" in request.tags["flywheel/reason"]
    second = _tick(sensors.landing_sensor, instance, tmp_path, first.cursor)
    assert not second.run_requests
    # The missing stream arrives, and a day is landed again: both requested, once.
    _land(tmp_path, "2026-01-04", streams=("interactions",))
    later = time.time() + 5
    os.utime(tmp_path / "landing/impressions/date=2026-01-03/_SUCCESS", (later, later))
    third = _tick(sensors.landing_sensor, instance, tmp_path, second.cursor)
    assert sorted(r.partition_key for r in third.run_requests) == ["2026-01-03", "2026-01-04"]
    assert len({r.run_key for r in [*first.run_requests, *third.run_requests]}) == 3


def _report(instance, asset, day, **metadata):
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=asset, partition=day, metadata=metadata))


def test_drift_sensor_retrains_once_per_drifted_report(instance, tmp_path):
    # Day 5 drifted on one column, not by much: no retrain asked for.
    _report(instance, "drift_report", "2026-01-05", drift_share=0.05, dataset_drift=False,
            drifted=True, large=False, persistent=False, drifted_columns="hour")
    _report(instance, "drift_report", "2026-01-06", drift_share=0.35, dataset_drift=True,
            drifted=True, large=False, persistent=True, drifted_columns="device, grade")
    # The day's rotation is still running: the sensor waits, and keeps its place.
    waiting = _tick(sensors.drift_sensor, instance, tmp_path)
    assert not waiting.run_requests
    _report(instance, "flywheel_health", "2026-01-05")
    _report(instance, "flywheel_health", "2026-01-06")
    first = _tick(sensors.drift_sensor, instance, tmp_path, waiting.cursor)
    jobs = {r.job_name: r for r in first.run_requests}
    assert set(jobs) == {"retrain_job", "record_alert_job"}
    retrain = jobs["retrain_job"]
    assert retrain.partition_key == "2026-01-06"
    assert retrain.tags["trigger"] == "drift"
    reason = retrain.tags["flywheel/reason"]
    assert "persisting 2 days" in reason and "device" in reason and "0.35" in reason
    config = retrain.run_config["ops"]["training_set"]["config"]
    settings = Settings.from_env(tmp_path)
    assert config == {"window_days": settings.drift.retrain_window_days,
                      "holdout_share": settings.drift.retrain_holdout_share}
    second = _tick(sensors.drift_sensor, instance, tmp_path, first.cursor)
    assert not second.run_requests


def test_quality_sensor_fires_on_a_drop_against_the_trailing_mean(instance, tmp_path):
    for day, value in (("2026-01-01", 3.0), ("2026-01-02", 3.1), ("2026-01-03", 2.95)):
        _report(instance, "curated_feedback", day, engagement_per_request=value)
        _report(instance, "flywheel_health", day)
    quiet = _tick(sensors.quality_sensor, instance, tmp_path)
    assert not quiet.run_requests
    _report(instance, "curated_feedback", "2026-01-04", engagement_per_request=2.0)
    _report(instance, "flywheel_health", "2026-01-04")
    fired = _tick(sensors.quality_sensor, instance, tmp_path, quiet.cursor)
    retrain = [r for r in fired.run_requests if r.job_name == "retrain_job"]
    assert [r.partition_key for r in retrain] == ["2026-01-04"]
    assert retrain[0].tags["trigger"] == "quality"
    assert not _tick(sensors.quality_sensor, instance, tmp_path, fired.cursor).run_requests


@dg.op
def _planted_failure():
    raise RuntimeError("planted failure for the alert test")


@dg.job
def _failing_job():
    _planted_failure()


def test_a_failed_run_becomes_a_recorded_alert(instance, tmp_path):
    result = _failing_job.execute_in_process(instance=instance, raise_on_error=False)
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor", dagster_instance=instance,
        dagster_run=result.dagster_run, dagster_event=failure).for_run_failure()
    request = sensors.run_failure_alert_sensor(context)
    assert request.tags["trigger"] == "run_failure"
    config = request.run_config["ops"]["record_alert"]["config"]
    assert config["severity"] == "critical" and "_failing_job" in config["title"]
    alert_run = record_alert_job.execute_in_process(
        run_config=request.run_config, instance=instance,
        resources={"flywheel": FlywheelResource(data_dir=str(tmp_path))})
    assert alert_run.success
    with warehouse.connect(Settings.from_env(tmp_path).warehouse_path) as conn:
        rows = conn.execute("SELECT source, severity, run_id, webhook_status FROM monitor.alerts").fetchall()
    assert rows == [("run_failure_alert_sensor", "critical", result.run_id, "not_configured")]


def test_quality_sensor_leaves_a_drifted_day_to_the_drift_sensor(instance, tmp_path):
    for day, value in (("2026-01-01", 3.0), ("2026-01-02", 3.1), ("2026-01-03", 2.0)):
        _report(instance, "curated_feedback", day, engagement_per_request=value)
    _report(instance, "drift_report", "2026-01-03", drift_share=0.1, dataset_drift=True,
            drifted=True, large=True, persistent=False, drifted_columns="device")
    for day in ("2026-01-01", "2026-01-02", "2026-01-03"):
        _report(instance, "flywheel_health", day)
    fired = _tick(sensors.quality_sensor, instance, tmp_path)
    assert [r.job_name for r in fired.run_requests] == ["record_alert_job"]
    assert fired.run_requests[0].tags["trigger"] == "quality"


def test_labels_sensor_retrains_once_enough_labels_arrived_outside_the_rotation(instance, tmp_path):
    threshold = Settings.from_env(tmp_path).labeling.retrain_after_labels
    # The day's rotation finished before people's labels were imported (a human_labels
    # run of its own, after a Label Studio export): the usual case.
    _report(instance, "flywheel_health", "2026-01-05")
    _report(instance, "human_labels", "2026-01-05", new_labels=dg.MetadataValue.int(threshold - 10))
    below = _tick(sensors.labels_sensor, instance, tmp_path)
    assert not below.run_requests and f"{threshold - 10} new human labels" in below.skip_reason.skip_message
    _report(instance, "human_labels", "2026-01-06", new_labels=dg.MetadataValue.int(25))
    fired = _tick(sensors.labels_sensor, instance, tmp_path, below.cursor)
    assert [(r.job_name, r.partition_key) for r in fired.run_requests] == [("retrain_job", "2026-01-06")]
    assert fired.run_requests[0].tags["trigger"] == "labels"
    assert f"{threshold + 15} new human labels" in fired.run_requests[0].tags["flywheel/reason"]
    again = _tick(sensors.labels_sensor, instance, tmp_path, fired.cursor)
    assert not again.run_requests and "0 new human labels" in again.skip_reason.skip_message


def test_labels_sensor_waits_while_the_days_rotation_runs(instance, tmp_path):
    from flywheel_assets.jobs import daily_rotation_job

    threshold = Settings.from_env(tmp_path).labeling.retrain_after_labels
    run = instance.create_run_for_job(daily_rotation_job.resolve(
        asset_graph=build_definitions(str(tmp_path)).resolve_asset_graph()),
        tags={"dagster/partition": "2026-01-07"}, status=dg.DagsterRunStatus.STARTED)
    _report(instance, "human_labels", "2026-01-07", new_labels=dg.MetadataValue.int(threshold))
    waiting = _tick(sensors.labels_sensor, instance, tmp_path)
    assert not waiting.run_requests
    instance.report_run_canceled(run)
    fired = _tick(sensors.labels_sensor, instance, tmp_path, waiting.cursor)
    assert [r.partition_key for r in fired.run_requests] == ["2026-01-07"]
