"""Alerts: a small job that records one alert in `monitor.alerts` and sends it to the
webhook when one is configured. Sensors request it rather than writing themselves:
DuckDB takes one writer, and the job waits its turn in the `duckdb` pool like every
step that writes the warehouse."""

import json

import dagster as dg

from flywheel_assets.monitor import alerts
from flywheel_assets.resources import FlywheelResource


class AlertConfig(dg.Config):
    key: str
    source: str
    severity: str = "warning"
    title: str
    details_json: str = "{}"
    partition_date: str | None = None
    run_id: str | None = None


@dg.op(pool="duckdb")
def record_alert(context: dg.OpExecutionContext, config: AlertConfig,
                 flywheel: FlywheelResource) -> None:
    """Record the alert (once per key) and deliver it to the webhook with bounded retries."""
    alert = alerts.Alert(key=config.key, source=config.source, severity=config.severity,
                         title=config.title, details=json.loads(config.details_json),
                         partition_date=config.partition_date, run_id=config.run_id)
    with flywheel.warehouse() as conn:
        outcome = alerts.raise_alert(conn, alert, flywheel.settings.alert.webhook_url)
    context.log.info(f"alert {config.key}: webhook {outcome.webhook_status} after "
                     f"{outcome.attempts} attempt(s){' (duplicate)' if outcome.duplicate else ''}")


@dg.job(description="Record one alert in monitor.alerts (and send it to the webhook).",
        tags={"flywheel/kind": "alert"}, executor_def=dg.in_process_executor)
def record_alert_job():
    record_alert()


def alert_run_config(alert: alerts.Alert) -> dict:
    return {"ops": {"record_alert": {"config": {
        "key": alert.key, "source": alert.source, "severity": alert.severity,
        "title": alert.title, "details_json": json.dumps(alert.details, default=str),
        "partition_date": alert.partition_date, "run_id": alert.run_id}}}}
