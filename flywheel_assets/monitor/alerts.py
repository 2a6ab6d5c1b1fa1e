"""On-call alerts (docs/architecture.md, "Automation"): one row per alert in ``monitor.alerts``, optionally POSTed
as JSON to a webhook.

The caller chooses a dedupe key ("run_failure:<run_id>", "drift:2026-01-05"), so a sensor
that ticks twice records and sends one alert. Delivery is best effort with bounded
retries and never raises: an unreachable webhook must not crash the sensor, and the row
says what happened so on-call can see alerts that never reached them.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Callable

import duckdb

SEVERITIES = ("info", "warning", "critical")

ALERTS_DDL = """
CREATE SCHEMA IF NOT EXISTS monitor;
CREATE TABLE IF NOT EXISTS monitor.alerts (
    alert_key VARCHAR PRIMARY KEY, raised_at TIMESTAMPTZ NOT NULL, source VARCHAR NOT NULL,
    severity VARCHAR NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    partition_date DATE, run_id VARCHAR, title VARCHAR NOT NULL, details VARCHAR,
    webhook_status VARCHAR NOT NULL
        CHECK (webhook_status IN ('not_configured', 'delivered', 'failed', 'rejected')),
    webhook_attempts INTEGER NOT NULL, webhook_error VARCHAR);
"""


@dataclass(frozen=True)
class Alert:
    """What went wrong, for whom; validated on construction so a bad alert fails early."""
    key: str
    source: str
    severity: str
    title: str
    details: dict = field(default_factory=dict)
    partition_date: str | None = None
    run_id: str | None = None

    def __post_init__(self) -> None:
        if not self.key or not self.key.strip():
            raise ValueError("alert key must be a non-empty dedupe key, e.g. 'run_failure:<run_id>'")
        if self.severity not in SEVERITIES:
            raise ValueError(f"alert {self.key!r}: severity {self.severity!r} is not one of {SEVERITIES}")
        try:
            if self.partition_date is not None:
                dt.date.fromisoformat(self.partition_date)
        except (TypeError, ValueError):
            raise ValueError(f"alert {self.key!r}: partition_date {self.partition_date!r} "
                             "is not an ISO date (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class AlertOutcome:
    """``attempts`` counts webhook calls made by this call; a duplicate makes none and
    reports the status stored when the alert was first raised."""
    key: str
    duplicate: bool
    webhook_status: str
    attempts: int = 0
    error: str | None = None


def ensure_alerts_table(conn: duckdb.DuckDBPyConnection) -> None:
    """Create ``monitor.alerts`` if it does not exist yet (idempotent)."""
    conn.execute(ALERTS_DDL)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a bodiless GET: a redirecting webhook would
    # look "delivered" while nothing arrived. Surface the 3xx instead (-> rejected).
    def redirect_request(self, *args, **kwargs):
        return None


def _deliver(url: str, body: bytes, max_attempts: int, backoff_seconds: float,
             timeout_seconds: float, sleep: Callable[[float], None]) -> tuple[str, int, str | None]:
    """POST with bounded retries; returns (status, attempts, last error). Never raises."""
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    error = None
    for attempt in range(max_attempts):
        if attempt:
            sleep(backoff_seconds * 2 ** (attempt - 1))
        try:
            with opener.open(request, timeout=timeout_seconds):
                return "delivered", attempt + 1, None
        except urllib.error.HTTPError as e:
            e.close()
            error = f"HTTP {e.code} {e.reason}"
            # 5xx and 429 are the receiver's passing trouble; any other refusal will not
            # change on a retry.
            if e.code < 500 and e.code != 429:
                return "rejected", attempt + 1, error
        except (OSError, http.client.HTTPException, ValueError) as e:
            # Refused/reset connections, DNS, timeouts (URLError and TimeoutError are
            # OSErrors), garbled responses.
            error = f"{type(e).__name__}: {e}"
    return "failed", max_attempts, error


def raise_alert(conn: duckdb.DuckDBPyConnection, alert: Alert, webhook_url: str | None, *,
                max_attempts: int = 4, backoff_seconds: float = 0.5,
                timeout_seconds: float = 5.0, now: dt.datetime | None = None,
                sleep: Callable[[float], None] = time.sleep) -> AlertOutcome:
    """Record ``alert`` once per key and send it to ``webhook_url`` if one is given.

    A key already recorded is a duplicate: nothing is sent or written. Otherwise the
    webhook is tried up to ``max_attempts`` times (retrying connection errors, timeouts,
    5xx and 429 after ``backoff_seconds * 2**i``) and the row is written whatever the
    outcome. Raises ValueError only for invalid input, never for delivery failures.
    """
    if webhook_url is not None:
        parts = urllib.parse.urlsplit(webhook_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"alert webhook URL {webhook_url!r} must be an http:// or https:// URL")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    now = now or dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is None:
        raise ValueError(f"now={now!r} must be timezone-aware")
    ensure_alerts_table(conn)
    existing = conn.execute("SELECT webhook_status FROM monitor.alerts WHERE alert_key = ?",
                            [alert.key]).fetchall()
    if existing:
        return AlertOutcome(alert.key, True, existing[0][0])
    # default=str: a date or Decimal in the details must not stop the alert going out.
    details = json.dumps(alert.details, default=str, sort_keys=True)
    payload = {"key": alert.key, "source": alert.source, "severity": alert.severity,
               "title": alert.title, "details": json.loads(details),
               "partition_date": alert.partition_date, "run_id": alert.run_id,
               "raised_at": now.astimezone(dt.timezone.utc).isoformat(),
               # Slack-compatible receivers show only `text`.
               "text": f"[{alert.severity}] {alert.title}"}
    status, attempts, error = "not_configured", 0, None
    if webhook_url is not None:
        status, attempts, error = _deliver(webhook_url, json.dumps(payload).encode(), max_attempts,
                                           backoff_seconds, timeout_seconds, sleep)
    # ON CONFLICT: if another writer recorded the key while we were sending, keep theirs.
    conn.execute("INSERT INTO monitor.alerts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                 "ON CONFLICT DO NOTHING",
                 [alert.key, now, alert.source, alert.severity, alert.partition_date,
                  alert.run_id, alert.title, details, status, attempts, error])
    return AlertOutcome(alert.key, False, status, attempts, error)


def recent_alerts(conn: duckdb.DuckDBPyConnection, limit: int = 50) -> list[dict]:
    """The latest ``limit`` alerts, newest first, ``details`` parsed back into a dict.
    Empty when no alert was ever raised (works on a read-only connection)."""
    if not conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = 'monitor' "
                        "AND table_name = 'alerts'").fetchall():
        return []
    cursor = conn.execute("SELECT * FROM monitor.alerts ORDER BY raised_at DESC, alert_key "
                          "LIMIT ?", [int(limit)])
    columns = [c[0] for c in cursor.description]
    rows = [dict(zip(columns, row)) for row in cursor.fetchall()]
    for row in rows:
        row["details"] = json.loads(row["details"]) if row["details"] else {}
    return rows
