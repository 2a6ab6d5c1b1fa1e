"""On-call alerts (docs/architecture.md, "Automation"): one row per alert in ``monitor.alerts``, optionally POSTed
as JSON to a webhook.

The caller chooses a dedupe key ("run_failure:<run_id>", "drift:2026-01-05"), so a sensor
that ticks twice records and sends one alert.

Recording and sending are apart, so that no writer of the warehouse waits on the
network (an outbox): ``raise_alert`` only writes the row (``pending`` when a webhook is
configured). Delivery is three short steps: ``claim_due`` takes the pending alerts whose
time has come, marked with the claimer's token and held for a lease (an hour in the
jobs) so that another deliverer does not send them meanwhile; ``post`` sends each once
with a timeout and no connection open; ``settle`` writes what happened, for the rows
its token still holds. Delivery is at least once: an alert goes out twice only if a
deliverer's settling waits longer than its lease (it is then counted once): ``delivered``; ``rejected`` (a 4xx other than 429, or a redirect: a retry will
not change it); ``pending`` again with the next try after ``retry_seconds * 2**i`` for a
refused connection, a timeout, a 5xx or 429; ``failed`` after ``max_attempts`` tries.
The row always says what happened, so on-call can see alerts that never reached them.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

import duckdb

SEVERITIES = ("info", "warning", "critical")

ALERTS_DDL = """
CREATE SCHEMA IF NOT EXISTS monitor;
CREATE TABLE IF NOT EXISTS monitor.alerts (
    alert_key VARCHAR PRIMARY KEY, raised_at TIMESTAMPTZ NOT NULL, source VARCHAR NOT NULL,
    severity VARCHAR NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    partition_date DATE, run_id VARCHAR, title VARCHAR NOT NULL, details VARCHAR,
    webhook_status VARCHAR NOT NULL
        CHECK (webhook_status IN ('not_configured', 'pending', 'delivered', 'failed', 'rejected')),
    webhook_attempts INTEGER NOT NULL, webhook_error VARCHAR,
    -- pending: not tried before this time (a claimed alert: until its lease ends).
    next_attempt_at TIMESTAMPTZ, delivered_at TIMESTAMPTZ,
    -- the token of the deliverer that claimed it last.
    claimed_by VARCHAR);
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
    """``webhook_status`` is the row's status; a duplicate reports the one stored when
    the alert was first raised, and writes nothing."""
    key: str
    duplicate: bool
    webhook_status: str


@dataclass(frozen=True)
class Delivery:
    """A claimed alert: its key, the JSON body to send and the tries made before."""
    key: str
    body: bytes
    attempts: int


@dataclass(frozen=True)
class Sent:
    """One try: ``result`` is ``delivered``, ``rejected`` or ``retry``."""
    key: str
    result: str
    error: str | None = None


@dataclass(frozen=True)
class Backlog:
    """Alerts still to send after a delivery: how many, and when the first is due."""
    pending: int
    next_attempt_at: dt.datetime | None


def ensure_alerts_table(conn: duckdb.DuckDBPyConnection) -> None:
    """Create ``monitor.alerts`` if it does not exist yet (idempotent). A table of the
    version that sent alerts while recording them (no ``pending``) is rebuilt once, in
    one transaction, its rows kept."""
    conn.execute(_lake_ddl(ALERTS_DDL) if _on_lake(conn) else ALERTS_DDL)
    columns = _columns(conn)
    if "next_attempt_at" in columns:
        if "claimed_by" not in columns:
            conn.execute("ALTER TABLE monitor.alerts ADD COLUMN IF NOT EXISTS claimed_by VARCHAR")
        return
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute("ALTER TABLE monitor.alerts RENAME TO alerts_before_outbox")
        conn.execute(ALERTS_DDL)
        conn.execute("INSERT INTO monitor.alerts SELECT *, NULL, NULL, NULL "
                     "FROM monitor.alerts_before_outbox")
        conn.execute("DROP TABLE monitor.alerts_before_outbox")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _on_lake(conn: duckdb.DuckDBPyConnection) -> bool:
    from flywheel_assets import warehouse  # it imports this module

    return warehouse.on_lake(conn)


def _lake_ddl(ddl: str) -> str:
    """The table without the constraints DuckLake does not take (primary key, checks):
    on a lake, `raise_alert` keeps one row per key itself."""
    import re

    ddl = ddl.replace(" PRIMARY KEY", "")
    return re.sub(r"\s*CHECK \((?:[^()]|\([^()]*\))*\)", "", ddl)


def _columns(conn: duckdb.DuckDBPyConnection) -> set[str]:
    """The columns of ``monitor.alerts`` (none before the table exists)."""
    return {r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'monitor' AND table_name = 'alerts'").fetchall()}


def check_webhook_url(webhook_url: str | None) -> None:
    """Refuse anything but an http(s) URL with a host (ValueError naming it)."""
    if webhook_url is not None:
        parts = urllib.parse.urlsplit(webhook_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"alert webhook URL {webhook_url!r} must be an http:// or https:// URL")


def _aware(now: dt.datetime | None) -> dt.datetime:
    now = now or dt.datetime.now(dt.timezone.utc)
    if now.tzinfo is None:
        raise ValueError(f"now={now!r} must be timezone-aware")
    return now


def raise_alert(conn: duckdb.DuckDBPyConnection, alert: Alert, webhook_url: str | None, *,
                now: dt.datetime | None = None) -> AlertOutcome:
    """Record ``alert`` once per key: ``pending`` (due at once) when ``webhook_url`` is
    set, else ``not_configured``. Never touches the network, so any writer may call
    it. A key already recorded is a duplicate: nothing is written. Raises ValueError
    only for invalid input."""
    check_webhook_url(webhook_url)
    now = _aware(now)
    ensure_alerts_table(conn)
    # default=str: a date or Decimal in the details must not stop the alert going out.
    details = json.dumps(alert.details, default=str, sort_keys=True)
    status = "not_configured" if webhook_url is None else "pending"
    values = [alert.key, now, alert.source, alert.severity, alert.partition_date,
              alert.run_id, alert.title, details, status, now if status == "pending" else None]
    if _on_lake(conn):
        return _raise_on_lake(conn, alert.key, values)
    existing = conn.execute("SELECT webhook_status FROM monitor.alerts WHERE alert_key = ?",
                            [alert.key]).fetchall()
    if existing:
        return AlertOutcome(alert.key, True, existing[0][0])
    # ON CONFLICT: if another writer recorded the key meanwhile, keep theirs.
    conn.execute("INSERT INTO monitor.alerts VALUES "
                 "(?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, ?, NULL, NULL) ON CONFLICT DO NOTHING",
                 values)
    return AlertOutcome(alert.key, False, status)


# Of two rows of one key on a lake, the one kept: the one whose delivery went further
# (tried, delivered, given up), then the earliest, then by run id.
_FIRST_ROW = ("(webhook_attempts > 0 OR webhook_status IN ('delivered', 'failed', 'rejected'))"
              " DESC, raised_at, coalesce(run_id, '')")


def _raise_on_lake(conn: duckdb.DuckDBPyConnection, key: str, values: list) -> AlertOutcome:
    """A lake has no unique keys, and two writers' inserts never conflict: insert when
    the key is new, then keep one row of the key (`_FIRST_ROW`), all in one transaction
    tried again when it loses a race, so that writers that raced agree on one row, and a
    row left twice by a writer that died between the two is made one by the next."""
    from flywheel_assets import warehouse

    def record() -> AlertOutcome:
        with warehouse.transaction(conn):
            rows = conn.execute("SELECT count(*) FROM monitor.alerts WHERE alert_key = ?",
                                [key]).fetchone()[0]
            if not rows:
                conn.execute("INSERT INTO monitor.alerts VALUES "
                             "(?, ?, ?, ?, ?, ?, ?, ?, ?, 0, NULL, ?, NULL, NULL)", values)
            if rows != 1:
                conn.execute(f"""
                    DELETE FROM monitor.alerts WHERE alert_key = $key AND rowid NOT IN (
                        SELECT rowid FROM monitor.alerts WHERE alert_key = $key
                        ORDER BY {_FIRST_ROW} LIMIT 1)""", {"key": key})
            kept = conn.execute("SELECT raised_at, coalesce(run_id, ''), webhook_status "
                                "FROM monitor.alerts WHERE alert_key = ?", [key]).fetchall()
        mine = not rows and kept[0][0] == values[1] and kept[0][1] == (values[5] or "")
        return AlertOutcome(key, not mine, kept[0][2])
    return warehouse.retry_races(record, conn)


def _payload(row: tuple) -> bytes:
    key, raised_at, source, severity, partition_date, run_id, title, details = row
    return json.dumps({
        "key": key, "source": source, "severity": severity, "title": title,
        "details": json.loads(details) if details else {},
        "partition_date": partition_date.isoformat() if partition_date else None,
        "run_id": run_id, "raised_at": raised_at.astimezone(dt.timezone.utc).isoformat(),
        # Slack-compatible receivers show only `text`.
        "text": f"[{severity}] {title}"}).encode()


def claim_due(conn: duckdb.DuckDBPyConnection, *, token: str, lease_seconds: float, limit: int,
              now: dt.datetime | None = None) -> list[Delivery]:
    """The oldest ``limit`` pending alerts due by ``now``, marked with ``token`` and held
    for ``lease_seconds`` (``next_attempt_at`` moved to the lease's end) so that another
    deliverer does not take them meanwhile; a deliverer that dies leaves them due again
    when the lease ends. One short transaction; no network."""
    now = _aware(now)
    ensure_alerts_table(conn)
    conn.execute("BEGIN TRANSACTION")
    try:
        rows = conn.execute(
            "SELECT alert_key, raised_at, source, severity, partition_date, run_id, title, "
            "details, webhook_attempts FROM monitor.alerts "
            "WHERE webhook_status = 'pending' AND next_attempt_at <= ? "
            "ORDER BY next_attempt_at, raised_at, alert_key LIMIT ?", [now, int(limit)]).fetchall()
        if rows:
            conn.execute("UPDATE monitor.alerts SET next_attempt_at = ?, claimed_by = ? "
                         "WHERE alert_key IN (SELECT unnest(?))",
                         [now + dt.timedelta(seconds=lease_seconds), token, [r[0] for r in rows]])
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return [Delivery(r[0], _payload(r[:8]), r[8]) for r in rows]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a bodiless GET: a redirecting webhook would
    # look "delivered" while nothing arrived. Surface the 3xx instead (-> rejected).
    def redirect_request(self, *args, **kwargs):
        return None


def post(webhook_url: str, delivery: Delivery, timeout_seconds: float) -> Sent:
    """One POST of ``delivery``; never raises for a delivery failure."""
    check_webhook_url(webhook_url)
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(webhook_url, data=delivery.body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with opener.open(request, timeout=timeout_seconds):
            return Sent(delivery.key, "delivered")
    except urllib.error.HTTPError as e:
        e.close()
        error = f"HTTP {e.code} {e.reason}"
        # 5xx and 429 are the receiver's passing trouble; any other refusal will not
        # change on a retry.
        return Sent(delivery.key, "retry" if e.code >= 500 or e.code == 429 else "rejected", error)
    except (OSError, http.client.HTTPException, ValueError) as e:
        # Refused/reset connections, DNS, timeouts (URLError and TimeoutError are
        # OSErrors), garbled responses.
        return Sent(delivery.key, "retry", f"{type(e).__name__}: {e}")


def settle(conn: duckdb.DuckDBPyConnection, sent: list[Sent], *, token: str, max_attempts: int,
           retry_seconds: float, now: dt.datetime | None = None) -> Backlog:
    """Write each try's outcome (one transaction) and return what is still pending.

    Only rows still ``pending`` and still claimed with ``token`` change: a try whose row
    another deliverer claimed after this one's lease ended, or settled, is ignored (so
    it is counted once). After the ``i``-th failed try the next is due
    ``retry_seconds * 2**(i-1)`` later (at most a day); the ``max_attempts``-th gives up
    (``failed``)."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    now = _aware(now)
    ensure_alerts_table(conn)
    conn.execute("BEGIN TRANSACTION")
    try:
        for s in sent:
            conn.execute(
                "UPDATE monitor.alerts SET webhook_attempts = webhook_attempts + 1, "
                "webhook_error = ?, delivered_at = CASE WHEN ? = 'delivered' THEN ? END, "
                "webhook_status = CASE WHEN ? IN ('delivered', 'rejected') THEN ? "
                "  WHEN webhook_attempts + 1 >= ? THEN 'failed' ELSE 'pending' END, "
                "next_attempt_at = CASE WHEN ? = 'retry' AND webhook_attempts + 1 < ? "
                "  THEN ? + to_seconds(least(? * pow(2, webhook_attempts), 86400.0)) END "
                "WHERE alert_key = ? AND webhook_status = 'pending' AND claimed_by = ?",
                [s.error, s.result, now, s.result, s.result, max_attempts, s.result,
                 max_attempts, now, float(retry_seconds), s.key, token])
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return backlog(conn)


def backlog(conn: duckdb.DuckDBPyConnection) -> Backlog:
    """How many alerts are pending and when the first is due (works read-only, and
    before the table exists)."""
    if "next_attempt_at" not in _columns(conn):
        return Backlog(0, None)  # no table yet, or one of the version that sent as it recorded
    count, first = conn.execute("SELECT count(*), min(next_attempt_at) FROM monitor.alerts "
                                "WHERE webhook_status = 'pending'").fetchall()[0]
    return Backlog(int(count), first)


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
