"""Alerts: `record_alert_job` records one alert in `monitor.alerts` and sends what is due
to the webhook when one is configured; `deliver_alerts_job` sends what is due (the
retries; `alert_delivery_sensor` requests it). Sensors request these rather than
writing themselves: DuckDB takes one writer, and the steps that touch the warehouse
wait their turn in the `duckdb` pool like every step that writes it.

No writer waits on the network: the warehouse steps (record, claim, settle) are short
and in the pool; the step that POSTs (`send_alerts`) holds neither a connection nor a
pool slot, so a webhook that is down or slow delays only the alerts."""

import datetime as dt
import json
import time

import dagster as dg

from flywheel_assets.monitor import alerts
from flywheel_assets.resources import FlywheelResource

# Tags of a run that knows what alerts are left to send (the delivery sensor reads
# them: sensors do not read the warehouse).
ALERTS_REPORTED = "flywheel/alerts"  # "reported" on every such run
ALERTS_PENDING = "flywheel/alerts_pending"
NEXT_DELIVERY_AT = "flywheel/next_delivery_at"
REPORTED_AT = "flywheel/alerts_reported_at"
# A claim holds its alerts this long (at least): longer than a batch's sends and than
# the wait for the pool before settling, so that a second deliverer does not resend.
LEASE_SECONDS = 3600.0


class AlertConfig(dg.Config):
    key: str
    source: str
    severity: str = "warning"
    title: str
    details_json: str = "{}"
    partition_date: str | None = None
    run_id: str | None = None


def note_backlog(context, backlog: alerts.Backlog) -> None:
    """Tag the run with the alerts left to send and when it read them, for the sensor
    (which believes the latest reading)."""
    pending = backlog.pending
    context.instance.add_run_tags(context.run_id, {
        ALERTS_REPORTED: "reported", ALERTS_PENDING: str(pending),
        REPORTED_AT: f"{time.time():.3f}",
        NEXT_DELIVERY_AT: f"{backlog.next_attempt_at.timestamp():.3f}" if pending else ""})


@dg.op(pool="duckdb", out=dg.Out(dg.Nothing))
def record_alert(context: dg.OpExecutionContext, config: AlertConfig,
                 flywheel: FlywheelResource) -> None:
    """Record the alert once per key (`pending` when a webhook is configured)."""
    alert = alerts.Alert(key=config.key, source=config.source, severity=config.severity,
                         title=config.title, details=json.loads(config.details_json),
                         partition_date=config.partition_date, run_id=config.run_id)
    with flywheel.warehouse() as conn:
        outcome = alerts.raise_alert(conn, alert, flywheel.settings.alert.webhook_url)
    context.log.info(f"alert {config.key}: {outcome.webhook_status}"
                     f"{' (duplicate)' if outcome.duplicate else ''}")


@dg.op(pool="duckdb", ins={"after": dg.In(dg.Nothing)})
def claim_alerts(context: dg.OpExecutionContext, flywheel: FlywheelResource) -> list:
    """Take the alerts due (held for a lease: no other run sends them meanwhile)."""
    s = flywheel.settings.alert
    if s.webhook_url is None:
        return []
    # The lease outlasts the sends of a whole batch (timeouts included) and the wait
    # for the pool before settling.
    lease = max(LEASE_SECONDS, 2 * s.batch * s.timeout_seconds)
    with flywheel.warehouse() as conn:
        due = alerts.claim_due(conn, token=context.run_id, lease_seconds=lease, limit=s.batch)
    context.log.info(f"{len(due)} alert(s) due for the webhook")
    return due


@dg.op
def send_alerts(context: dg.OpExecutionContext, flywheel: FlywheelResource, due: list) -> list:
    """POST each alert once; no warehouse connection, no pool slot."""
    s = flywheel.settings.alert
    sent = [alerts.post(s.webhook_url, d, s.timeout_seconds) for d in due]
    for one in sent:
        context.log.info(f"alert {one.key}: {one.result}{f' ({one.error})' if one.error else ''}")
    return sent


@dg.op(pool="duckdb")
def settle_alerts(context: dg.OpExecutionContext, flywheel: FlywheelResource, sent: list) -> None:
    """Write each try's outcome; tag the run with what is left for the delivery sensor."""
    s = flywheel.settings.alert
    with flywheel.warehouse() as conn:
        if sent:
            left = alerts.settle(conn, sent, token=context.run_id, max_attempts=s.max_attempts,
                                 retry_seconds=s.retry_seconds)
        else:
            left = alerts.backlog(conn)
    note_backlog(context, left)
    if left.pending:
        context.log.info(f"{left.pending} alert(s) left to send, the next due "
                         f"{left.next_attempt_at.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC")


@dg.job(description="Record one alert in monitor.alerts and send what is due to the webhook.",
        tags={"flywheel/kind": "alert"}, executor_def=dg.in_process_executor)
def record_alert_job():
    settle_alerts(send_alerts(claim_alerts(after=record_alert())))


@dg.job(description="Send the alerts due to the webhook (retries of the ones it missed).",
        tags={"flywheel/kind": "alert"}, executor_def=dg.in_process_executor)
def deliver_alerts_job():
    settle_alerts(send_alerts(claim_alerts()))


def alert_run_config(alert: alerts.Alert) -> dict:
    return {"ops": {"record_alert": {"config": {
        "key": alert.key, "source": alert.source, "severity": alert.severity,
        "title": alert.title, "details_json": json.dumps(alert.details, default=str),
        "partition_date": alert.partition_date, "run_id": alert.run_id}}}}
