"""Alerts against a real DuckDB file and a real local HTTP webhook (no mocks of urllib)."""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flywheel_assets import warehouse
from flywheel_assets.monitor.alerts import Alert, ensure_alerts_table, raise_alert, recent_alerts

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


@pytest.fixture
def sleeps():
    """A recording stand-in for time.sleep, so backoff is asserted instead of waited."""
    return []


def _alert(key="run_failure:abc123", **overrides) -> Alert:
    fields = dict(key=key, source="run_failure_sensor", severity="critical",
                  title="ingest_job failed", details={"step": "raw_impressions", "n": 3},
                  partition_date="2026-01-04", run_id="abc123")
    return Alert(**{**fields, **overrides})


def _rows(conn) -> list[dict]:
    cursor = conn.execute("SELECT * FROM monitor.alerts ORDER BY alert_key")
    return [dict(zip([c[0] for c in cursor.description], r)) for r in cursor.fetchall()]


def test_delivered_first_time_posts_the_alert_as_json(conn, webhook, sleeps):
    hook = webhook(200)
    outcome = raise_alert(conn, _alert(), hook.url, now=NOW, sleep=sleeps.append)
    assert (outcome.webhook_status, outcome.attempts, outcome.duplicate) == ("delivered", 1, False)
    assert hook.headers[0]["Content-Type"] == "application/json"
    [body] = hook.bodies
    assert body["key"] == "run_failure:abc123" and body["severity"] == "critical"
    assert body["details"] == {"step": "raw_impressions", "n": 3}
    assert (body["partition_date"], body["run_id"]) == ("2026-01-04", "abc123")
    assert body["raised_at"] == "2026-01-05T03:15:00+00:00"
    [row] = _rows(conn)
    assert (row["webhook_status"], row["webhook_attempts"], row["webhook_error"]) == ("delivered", 1, None)
    assert row["raised_at"] == NOW and row["partition_date"] == dt.date(2026, 1, 4)
    assert json.loads(row["details"]) == {"step": "raw_impressions", "n": 3}
    assert sleeps == []


@pytest.mark.parametrize("script, sleeps_expected", [
    ((500, 503, 200), [0.5, 1.0]),
    ((429, 200), [0.5]),
])
def test_5xx_and_429_are_retried_with_exponential_backoff(conn, webhook, sleeps, script,
                                                          sleeps_expected):
    hook = webhook(*script)
    outcome = raise_alert(conn, _alert(), hook.url, sleep=sleeps.append)
    assert (outcome.webhook_status, outcome.attempts) == ("delivered", len(script))
    assert len(hook.bodies) == len(script) and all(b == hook.bodies[0] for b in hook.bodies)
    assert sleeps == sleeps_expected
    assert _rows(conn)[0]["webhook_attempts"] == len(script)


def test_always_500_gives_up_after_max_attempts_and_still_records(conn, webhook, sleeps):
    hook = webhook(500, 500, 500, 500, 500)
    outcome = raise_alert(conn, _alert(), hook.url, max_attempts=4, sleep=sleeps.append)
    assert (outcome.webhook_status, outcome.attempts) == ("failed", 4)
    assert len(hook.bodies) == 4
    assert sleeps == [0.5, 1.0, 2.0]
    [row] = _rows(conn)
    assert (row["webhook_status"], row["webhook_attempts"]) == ("failed", 4)
    assert "500" in row["webhook_error"] and row["title"] == "ingest_job failed"


@pytest.mark.parametrize("reply", [400, 404, ("redirect", 302)])
def test_other_4xx_and_redirects_are_rejected_without_retry(conn, webhook, sleeps, reply):
    # A followed redirect would re-send the POST as a bodiless GET: not a delivery.
    hook = webhook(reply, 200, 200)
    outcome = raise_alert(conn, _alert(), hook.url, sleep=sleeps.append)
    assert (outcome.webhook_status, outcome.attempts) == ("rejected", 1)
    assert len(hook.bodies) == 1 and sleeps == []
    code = reply if isinstance(reply, int) else reply[1]
    assert _rows(conn)[0]["webhook_error"].startswith(f"HTTP {code}")


def test_connection_refused_fails_without_raising(conn, sleeps):
    # Bound but not listening: connecting gets a reset, deterministically.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
        outcome = raise_alert(conn, _alert(), url, max_attempts=3, sleep=sleeps.append)
    assert (outcome.webhook_status, outcome.attempts) == ("failed", 3)
    assert "refused" in outcome.error.lower() and sleeps == [0.5, 1.0]
    assert _rows(conn)[0]["webhook_error"] == outcome.error


def test_timeouts_are_retried(conn, webhook, sleeps):
    hook = webhook(("hang", 5), 200)
    outcome = raise_alert(conn, _alert(), hook.url, timeout_seconds=0.2, sleep=sleeps.append)
    assert (outcome.webhook_status, outcome.attempts) == ("delivered", 2)
    assert len(hook.bodies) == 2 and sleeps == [0.5]


def test_timeouts_until_max_attempts_fail_with_the_error(conn, webhook, sleeps):
    hook = webhook(("hang", 5), ("hang", 5))
    outcome = raise_alert(conn, _alert(), hook.url, max_attempts=2, timeout_seconds=0.2,
                          sleep=sleeps.append)
    assert (outcome.webhook_status, outcome.attempts) == ("failed", 2)
    assert "timed out" in outcome.error and len(hook.bodies) == 2


def test_no_url_records_not_configured(conn, sleeps):
    outcome = raise_alert(conn, _alert(), None, sleep=sleeps.append)
    assert (outcome.webhook_status, outcome.attempts, outcome.error) == ("not_configured", 0, None)
    [row] = _rows(conn)
    assert (row["webhook_status"], row["webhook_attempts"]) == ("not_configured", 0)
    assert sleeps == []


def test_same_key_twice_records_and_sends_once(conn, webhook, sleeps):
    hook = webhook(200, 200)
    raise_alert(conn, _alert(), hook.url, sleep=sleeps.append)
    again = raise_alert(conn, _alert(title="ingest_job failed again"), hook.url, sleep=sleeps.append)
    assert again.duplicate and again.attempts == 0 and again.webhook_status == "delivered"
    assert len(hook.bodies) == 1
    [row] = _rows(conn)
    assert row["title"] == "ingest_job failed"


def test_a_failed_key_is_not_resent(conn, webhook, sleeps):
    hook = webhook(400, 200)
    raise_alert(conn, _alert(), hook.url, sleep=sleeps.append)
    again = raise_alert(conn, _alert(), hook.url, sleep=sleeps.append)
    assert again.duplicate and again.webhook_status == "rejected" and len(hook.bodies) == 1


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
