"""Alerts against a real DuckDB file and a real local HTTP webhook (no mocks of urllib)."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest

from flywheel_assets import warehouse
from flywheel_assets.monitor.alerts import (Alert, Backlog, Delivery, Sent, claim_due, ensure_alerts_table, post,
                                           raise_alert, recent_alerts, settle)

NOW = dt.datetime(2026, 1, 5, 3, 15, tzinfo=dt.timezone.utc)


class Receiver:
    """A webhook on 127.0.0.1 that answers each POST with the next scripted reply: a status
    code, ("hang", seconds) to outlast the client's timeout, or ("redirect", code)."""

    def __init__(self, script):
        self.script, self.bodies, self.headers = list(script), [], []
        self.release = threading.Event()  # wakes hung handlers at teardown
        lock, receiver = threading.Lock(), self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    receiver.bodies.append(json.loads(body))
                    receiver.headers.append(dict(self.headers))
                    # Calls beyond the script get 418 so an extra call shows up as a failure.
                    reply = receiver.script.pop(0) if receiver.script else 418
                try:
                    if isinstance(reply, tuple) and reply[0] == "hang":
                        receiver.release.wait(reply[1])
                        reply = 200
                    if isinstance(reply, tuple):  # redirect to ourselves
                        self.send_response(reply[1])
                        self.send_header("Location", receiver.url)
                    else:
                        self.send_response(reply)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()  # joins the handler threads
        self.thread.join(timeout=5)


@pytest.fixture
def webhook():
    """Factory: ``webhook(500, 200)`` starts a receiver with that script."""
    receivers = []

    def start(*script):
        receivers.append(Receiver(script))
        return receivers[-1]

    yield start
    for receiver in receivers:
        receiver.close()


@pytest.fixture
def conn(tmp_path: Path):
    with warehouse.connect(tmp_path / "warehouse.duckdb") as conn:
        yield conn


def _alert(key="run_failure:abc123", **overrides) -> Alert:
    fields = dict(key=key, source="run_failure_sensor", severity="critical",
                  title="ingest_job failed", details={"step": "raw_impressions", "n": 3},
                  partition_date="2026-01-04", run_id="abc123")
    return Alert(**{**fields, **overrides})


def _rows(conn) -> list[dict]:
    cursor = conn.execute("SELECT * FROM monitor.alerts ORDER BY alert_key")
    return [dict(zip([c[0] for c in cursor.description], r)) for r in cursor.fetchall()]


RETRY = 30.0


def _try(conn, url, at, *, max_attempts=6, timeout=5.0):
    """One delivery as the jobs make it: claim what is due at ``at``, POST, settle."""
    due = claim_due(conn, token="run-a", lease_seconds=600, limit=20, now=at)
    sent = [post(url, d, timeout) for d in due]
    left = settle(conn, sent, token="run-a", max_attempts=max_attempts, retry_seconds=RETRY,
                  now=at)
    return sent, left


def test_delivered_first_time_posts_the_alert_as_json(conn, webhook):
    hook = webhook(200)
    outcome = raise_alert(conn, _alert(), hook.url, now=NOW)
    assert (outcome.webhook_status, outcome.duplicate) == ("pending", False)
    assert hook.bodies == []  # recording sends nothing
    sent, left = _try(conn, hook.url, NOW)
    assert [s.result for s in sent] == ["delivered"] and left.pending == 0
    assert hook.headers[0]["Content-Type"] == "application/json"
    [body] = hook.bodies
    assert body["key"] == "run_failure:abc123" and body["severity"] == "critical"
    assert body["details"] == {"step": "raw_impressions", "n": 3}
    assert (body["partition_date"], body["run_id"]) == ("2026-01-04", "abc123")
    assert body["raised_at"] == "2026-01-05T03:15:00+00:00"
    [row] = _rows(conn)
    assert (row["webhook_status"], row["webhook_attempts"], row["webhook_error"]) == ("delivered", 1, None)
    assert row["raised_at"] == NOW and row["partition_date"] == dt.date(2026, 1, 4)
    assert row["delivered_at"] == NOW and row["next_attempt_at"] is None
    assert json.loads(row["details"]) == {"step": "raw_impressions", "n": 3}


@pytest.mark.parametrize("script", [(500, 503, 200), (429, 200)])
def test_5xx_and_429_are_retried_later_with_exponential_backoff(conn, webhook, script):
    hook = webhook(*script)
    raise_alert(conn, _alert(), hook.url, now=NOW)
    at = NOW
    for i, _ in enumerate(script[:-1]):
        sent, left = _try(conn, hook.url, at)
        assert [s.result for s in sent] == ["retry"]
        # The next try waits retry * 2**i; nothing is due a second before it.
        assert left.next_attempt_at == at + dt.timedelta(seconds=RETRY * 2 ** i)
        assert _try(conn, hook.url, left.next_attempt_at - dt.timedelta(seconds=1))[0] == []
        at = left.next_attempt_at
    sent, left = _try(conn, hook.url, at)
    assert [s.result for s in sent] == ["delivered"] and left == Backlog(0, None)
    assert len(hook.bodies) == len(script) and all(b == hook.bodies[0] for b in hook.bodies)
    [row] = _rows(conn)
    assert (row["webhook_status"], row["webhook_attempts"]) == ("delivered", len(script))


def test_always_500_gives_up_after_max_attempts_and_still_records(conn, webhook):
    hook = webhook(*[500] * 5)
    raise_alert(conn, _alert(), hook.url, now=NOW)
    at, waits = NOW, []
    for _ in range(4):
        _, left = _try(conn, hook.url, at, max_attempts=4)
        if left.pending:
            waits.append((left.next_attempt_at - at).total_seconds())
            at = left.next_attempt_at
    assert waits == [RETRY, 2 * RETRY, 4 * RETRY] and left.pending == 0
    assert len(hook.bodies) == 4
    assert _try(conn, hook.url, at + dt.timedelta(days=1))[0] == []  # never again
    [row] = _rows(conn)
    assert (row["webhook_status"], row["webhook_attempts"]) == ("failed", 4)
    assert "500" in row["webhook_error"] and row["title"] == "ingest_job failed"


@pytest.mark.parametrize("reply", [400, 404, ("redirect", 302)])
def test_other_4xx_and_redirects_are_rejected_without_retry(conn, webhook, reply):
    # A followed redirect would re-send the POST as a bodiless GET: not a delivery.
    hook = webhook(reply, 200, 200)
    raise_alert(conn, _alert(), hook.url, now=NOW)
    sent, left = _try(conn, hook.url, NOW)
    assert [s.result for s in sent] == ["rejected"] and left.pending == 0
    assert _try(conn, hook.url, NOW + dt.timedelta(days=1))[0] == []
    assert len(hook.bodies) == 1
    code = reply if isinstance(reply, int) else reply[1]
    [row] = _rows(conn)
    assert row["webhook_status"] == "rejected" and row["webhook_error"].startswith(f"HTTP {code}")


def test_connection_refused_is_kept_for_a_later_try(conn):
    # Bound but not listening: connecting gets a reset, deterministically.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        raise_alert(conn, _alert(), url, now=NOW)
        sent, left = _try(conn, url, NOW)
    assert sent[0].result == "retry" and "refused" in sent[0].error.lower()
    assert left == Backlog(1, NOW + dt.timedelta(seconds=RETRY))
    [row] = _rows(conn)
    assert (row["webhook_status"], row["webhook_attempts"]) == ("pending", 1)
    assert row["webhook_error"] == sent[0].error


def test_a_timeout_is_retried_and_delivered_on_the_next_try(conn, webhook):
    hook = webhook(("hang", 5), 200)
    raise_alert(conn, _alert(), hook.url, now=NOW)
    sent, left = _try(conn, hook.url, NOW, timeout=0.2)
    assert sent[0].result == "retry" and "timed out" in sent[0].error
    sent, left = _try(conn, hook.url, left.next_attempt_at, timeout=0.2)
    assert [s.result for s in sent] == ["delivered"] and len(hook.bodies) == 2


def test_no_url_records_not_configured_and_nothing_is_due(conn):
    outcome = raise_alert(conn, _alert(), None, now=NOW)
    assert (outcome.webhook_status, outcome.duplicate) == ("not_configured", False)
    assert claim_due(conn, token="run-a", lease_seconds=60, limit=20, now=NOW + dt.timedelta(days=1)) == []
    [row] = _rows(conn)
    assert (row["webhook_status"], row["webhook_attempts"]) == ("not_configured", 0)


def test_same_key_twice_records_and_sends_once(conn, webhook):
    hook = webhook(200, 200)
    raise_alert(conn, _alert(), hook.url, now=NOW)
    _try(conn, hook.url, NOW)
    again = raise_alert(conn, _alert(title="ingest_job failed again"), hook.url, now=NOW)
    assert again.duplicate and again.webhook_status == "delivered"
    assert _try(conn, hook.url, NOW)[0] == [] and len(hook.bodies) == 1
    [row] = _rows(conn)
    assert row["title"] == "ingest_job failed"


def test_a_claimed_alert_is_not_claimed_again_until_its_lease_ends(conn):
    raise_alert(conn, _alert(), "http://127.0.0.1:9/hook", now=NOW)
    [first] = claim_due(conn, token="run-a", lease_seconds=120, limit=20, now=NOW)
    # Another deliverer meanwhile: nothing to take, so the alert is not sent twice.
    assert claim_due(conn, token="run-a", lease_seconds=120, limit=20, now=NOW + dt.timedelta(seconds=119)) == []
    # The first deliverer is late settling (or died): due again after the lease, and
    # another deliverer's claim takes it.
    [again] = claim_due(conn, token="run-b", lease_seconds=120, limit=20,
                        now=NOW + dt.timedelta(seconds=120))
    assert again.key == first.key and again.body == first.body and again.attempts == 0
    # The late first deliverer settles: ignored (the claim is run-b's); run-b's counts.
    settle(conn, [Sent(first.key, "retry", "late")], token="run-a", max_attempts=6,
           retry_seconds=RETRY, now=NOW + dt.timedelta(seconds=121))
    assert _rows(conn)[0]["webhook_attempts"] == 0
    settle(conn, [Sent(first.key, "delivered")], token="run-b", max_attempts=6,
           retry_seconds=RETRY, now=NOW + dt.timedelta(seconds=122))
    [row] = _rows(conn)
    assert (row["webhook_status"], row["webhook_attempts"]) == ("delivered", 1)


def test_settling_an_alert_another_run_settled_changes_nothing(conn, webhook):
    hook = webhook(200)
    raise_alert(conn, _alert(), hook.url, now=NOW)
    _try(conn, hook.url, NOW)
    before = _rows(conn)
    settle(conn, [Sent("run_failure:abc123", "retry", "late")], token="run-a", max_attempts=6,
           retry_seconds=RETRY, now=NOW + dt.timedelta(minutes=5))
    assert _rows(conn) == before


def test_a_batch_takes_the_oldest_due_first(conn):
    for minute in (3, 1, 2):
        raise_alert(conn, _alert(key=f"k{minute}"), "http://127.0.0.1:9/hook",
                    now=NOW + dt.timedelta(minutes=minute))
    due = claim_due(conn, token="run-a", lease_seconds=60, limit=2, now=NOW + dt.timedelta(hours=1))
    assert [d.key for d in due] == ["k1", "k2"]


def test_a_table_of_the_version_that_sent_as_it_recorded_is_migrated_with_its_rows(tmp_path):
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as old:
        old.execute(OLD_DDL)
        old.execute("INSERT INTO monitor.alerts VALUES ('drift:2026-01-03', ?, 'drift_sensor', "
                    "'warning', '2026-01-03', NULL, 'drift', '{}', 'failed', 4, 'HTTP 500')", [NOW])
    with warehouse.connect(path) as conn:  # every connection brings the schema up to date
        [row] = _rows(conn)
        assert (row["alert_key"], row["webhook_status"], row["webhook_attempts"]) == (
            "drift:2026-01-03", "failed", 4)
        assert row["next_attempt_at"] is None
        assert raise_alert(conn, _alert(), "http://127.0.0.1:9/hook", now=NOW).webhook_status == "pending"
        assert conn.execute("SELECT count(*) FROM information_schema.tables "
                            "WHERE table_name LIKE 'alerts%'").fetchall() == [(1,)]


# monitor.alerts as the version before the outbox created it.
OLD_DDL = """
CREATE SCHEMA monitor;
CREATE TABLE monitor.alerts (
    alert_key VARCHAR PRIMARY KEY, raised_at TIMESTAMPTZ NOT NULL, source VARCHAR NOT NULL,
    severity VARCHAR NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    partition_date DATE, run_id VARCHAR, title VARCHAR NOT NULL, details VARCHAR,
    webhook_status VARCHAR NOT NULL
        CHECK (webhook_status IN ('not_configured', 'delivered', 'failed', 'rejected')),
    webhook_attempts INTEGER NOT NULL, webhook_error VARCHAR);
"""


@pytest.mark.parametrize("overrides, message", [
    ({"severity": "urgent"}, "severity 'urgent'"),
    ({"key": ""}, "non-empty"),
    ({"key": "   "}, "non-empty"),
    ({"partition_date": "05/01/2026"}, "ISO date"),
])
def test_invalid_alerts_raise_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        _alert(**overrides)


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "hooks.example.com/x", "http://"])
def test_non_http_urls_raise_and_send_nothing(conn, webhook, url):
    hook = webhook(200)
    with pytest.raises(ValueError, match=re.escape(repr(url))):
        raise_alert(conn, _alert(), url)
    with pytest.raises(ValueError, match=re.escape(repr(url))):
        post(url, Delivery("k", b"{}", 0), 1.0)
    assert hook.bodies == [] and recent_alerts(conn) == []


def test_recent_alerts_newest_first_with_limit(conn):
    assert recent_alerts(conn) == []  # before the table exists
    ensure_alerts_table(conn)
    ensure_alerts_table(conn)  # idempotent
    for day in (3, 5, 4):
        raise_alert(conn, _alert(key=f"drift:2026-01-0{day}", severity="warning",
                                 details={"drift_share": 0.4}),
                    None, now=dt.datetime(2026, 1, day, tzinfo=dt.timezone.utc))
    assert [a["alert_key"] for a in recent_alerts(conn)] == [
        "drift:2026-01-05", "drift:2026-01-04", "drift:2026-01-03"]
    [latest] = recent_alerts(conn, limit=1)
    assert latest["details"] == {"drift_share": 0.4} and latest["severity"] == "warning"


@pytest.mark.parametrize("env, message", [
    ({"FLYWHEEL_ALERT_WEBHOOK_URL": "hooks.example.com/x"}, "must be an http"),
    ({"FLYWHEEL_ALERT_MAX_ATTEMPTS": "0"}, "max_attempts"),
    ({"FLYWHEEL_ALERT_MAX_ATTEMPTS": "21"}, "max_attempts"),
    ({"FLYWHEEL_ALERT_TIMEOUT_SECONDS": "0"}, "timeout_seconds"),
    ({"FLYWHEEL_ALERT_RETRY_SECONDS": "0"}, "retry_seconds"),
])
def test_alert_settings_are_refused_when_they_load(tmp_path, monkeypatch, env, message):
    from flywheel_assets.settings import Settings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        Settings.from_env(tmp_path)


def test_a_table_of_the_first_outbox_gets_its_claim_column_with_its_rows(tmp_path):
    path = tmp_path / "outbox.duckdb"
    first_outbox = OLD_DDL.replace("webhook_error VARCHAR);", "webhook_error VARCHAR, "
                                   "next_attempt_at TIMESTAMPTZ, delivered_at TIMESTAMPTZ);")
    first_outbox = first_outbox.replace("'not_configured', 'delivered'",
                                        "'not_configured', 'pending', 'delivered'")
    with duckdb.connect(str(path)) as old:
        old.execute(first_outbox)
        old.execute("INSERT INTO monitor.alerts VALUES ('drift:2026-01-03', ?, 'drift_sensor', "
                    "'warning', '2026-01-03', NULL, 'drift', '{}', 'pending', 1, 'refused', ?, NULL)",
                    [NOW, NOW])
    with warehouse.connect(path) as conn:
        [row] = _rows(conn)
        assert (row["webhook_status"], row["claimed_by"]) == ("pending", None)
        [due] = claim_due(conn, token="run-a", lease_seconds=60, limit=20, now=NOW)
        assert due.key == "drift:2026-01-03" and due.attempts == 1
        assert _rows(conn)[0]["claimed_by"] == "run-a"
