"""The alert webhook down or slow, on a real Dagster instance on disk (the product's
dagster.yaml: the `duckdb` pool limited to one step) and a real DuckDB warehouse: the
alert is kept in `monitor.alerts` as pending, the run that recorded it finishes at once,
`alert_delivery_sensor` asks for a delivery when the next try is due, and the delivery
reaches the webhook once it is back. While the webhook is being called, another process
can write the warehouse and nothing holds the `duckdb` pool: no writer waits on the
network."""

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest

from flywheel_assets import warehouse
from flywheel_assets.monitor.alerts import Alert
from flywheel_assets.monitor.jobs import (ALERTS_PENDING, NEXT_DELIVERY_AT, alert_run_config,
                                          deliver_alerts_job, record_alert_job)
from flywheel_assets.monitor.sensors import alert_delivery_sensor
from flywheel_assets.resources import FlywheelResource
from flywheel_assets.settings import Settings

# Long enough for the probe to answer within it on a loaded machine.
TIMEOUT = 4.0
RETRY = 3.0

# Asked by the webhook while it is being called (one line on stdin, one JSON line back;
# started beforehand so that it answers at once): another process writes the warehouse
# (DuckDB refuses a second writer process while one holds the file) and reads who holds
# the `duckdb` pool.
PROBE = textwrap.dedent("""
    import json, sys
    import dagster as dg, duckdb
    print("ready", flush=True)
    for _ in sys.stdin:
        try:
            with duckdb.connect(sys.argv[1]) as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS main.probe (written_at DOUBLE)")
                conn.execute("INSERT INTO main.probe VALUES (epoch(now()))")
            with dg.DagsterInstance.get() as instance:
                slots = instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots
            print(json.dumps({"pool_holders": [s.run_id for s in slots]}), flush=True)
        except Exception as e:
            print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
""")


class Webhook:
    """A receiver on 127.0.0.1 that runs PROBE on each POST, then answers after
    ``delay`` seconds (longer than the client's timeout: slow) with ``status``."""

    def __init__(self, warehouse_path: Path, probe: Path | None = None):
        self.delay, self.status, self.bodies, self.probes = 0.0, 200, [], []
        self.release, hook, lock = threading.Event(), self, threading.Lock()
        self.prober = None
        if probe is not None:
            self.prober = subprocess.Popen([sys.executable, str(probe), str(warehouse_path)],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           text=True)
            assert self.prober.stdout.readline().strip() == "ready"

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                if hook.prober is not None:
                    with lock:
                        hook.prober.stdin.write("probe\n")
                        hook.prober.stdin.flush()
                        hook.probes.append(json.loads(hook.prober.stdout.readline()))
                hook.release.wait(hook.delay)
                try:
                    self.send_response(hook.status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the client gave up (slow)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        if self.prober is not None:
            self.prober.stdin.close()
            self.prober.wait(timeout=30)


@pytest.fixture
def flywheel(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(Path(__file__).parents[2] / "flywheel_assets" / "dagster.yaml", home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("FLYWHEEL_ALERT_TIMEOUT_SECONDS", str(TIMEOUT))
    monkeypatch.setenv("FLYWHEEL_ALERT_RETRY_SECONDS", str(RETRY))
    (tmp_path / "probe.py").write_text(PROBE)
    return tmp_path


@pytest.fixture
def webhook(flywheel, monkeypatch):
    hook = Webhook(Settings.from_env(flywheel).warehouse_path, flywheel / "probe.py")
    monkeypatch.setenv("FLYWHEEL_ALERT_WEBHOOK_URL", hook.url)
    yield hook
    hook.close()


def _run(job, instance, data_dir, **kwargs):
    return job.execute_in_process(instance=instance, resources={
        "flywheel": FlywheelResource(data_dir=str(data_dir))}, **kwargs)


def _alert_row(data_dir) -> dict:
    with warehouse.connect(Settings.from_env(data_dir).warehouse_path, read_only=True) as conn:
        cursor = conn.execute("SELECT * FROM monitor.alerts")
        [row] = cursor.fetchall()
        return dict(zip([c[0] for c in cursor.description], row))


def _tick(instance, data_dir):
    with dg.build_sensor_context(instance=instance, resources={
            "flywheel": FlywheelResource(data_dir=str(data_dir))}) as context:
        return alert_delivery_sensor(context)


@contextlib.contextmanager
def _webhook_down(monkeypatch):
    """The webhook set to a port bound but not listening: the connection is refused."""
    with socket.socket() as down:
        down.bind(("127.0.0.1", 0))
        monkeypatch.setenv("FLYWHEEL_ALERT_WEBHOOK_URL",
                           f"http://127.0.0.1:{down.getsockname()[1]}/hook")
        yield


def _tick_when_due(instance, data_dir, run_id: str):
    """The sensor's tick once the time ``run_id`` said the next try is due has come."""
    due = float(instance.get_run_by_id(run_id).tags[NEXT_DELIVERY_AT])
    time.sleep(max(0.0, due - time.time()) + 0.1)
    request = _tick(instance, data_dir)
    assert isinstance(request, dg.RunRequest), request.skip_message
    return request


ALERT = Alert(key="run_failure:abc", source="run_failure_alert_sensor", severity="critical",
              title="daily_rotation_job failed for 2026-01-04", partition_date="2026-01-04")


def test_a_slow_webhook_keeps_the_alert_and_holds_no_writer(flywheel, webhook):
    webhook.delay, webhook.status = 3 * TIMEOUT, 200  # answers long after the client gave up
    with dg.DagsterInstance.get() as instance:
        started = time.monotonic()
        run = _run(record_alert_job, instance, flywheel, run_config=alert_run_config(ALERT))
        took = time.monotonic() - started
        assert run.success
        # While the webhook was being called, another process wrote the warehouse and
        # nothing held the pool.
        [probe] = webhook.probes
        assert probe == {"pool_holders": []}, probe
        with warehouse.connect(Settings.from_env(flywheel).warehouse_path, read_only=True) as conn:
            assert conn.execute("SELECT count(*) FROM main.probe").fetchall() == [(1,)]
        # The run waited one timeout, not the webhook's three.
        assert took < webhook.delay, took
        row = _alert_row(flywheel)
        assert (row["webhook_status"], row["webhook_attempts"]) == ("pending", 1)
        assert "timed out" in row["webhook_error"]
        assert instance.get_run_by_id(run.run_id).tags[ALERTS_PENDING] == "1"


def test_a_webhook_down_gets_the_alert_when_it_is_back(flywheel, monkeypatch):
    with _webhook_down(monkeypatch):
        with dg.DagsterInstance.get() as instance:
            first = _run(record_alert_job, instance, flywheel, run_config=alert_run_config(ALERT))
            assert first.success
            row = _alert_row(flywheel)
            assert (row["webhook_status"], row["webhook_attempts"]) == ("pending", 1)
            assert "refused" in row["webhook_error"].lower()
            # Not due yet: the sensor waits for the back-off.
            early = _tick(instance, flywheel)
            assert isinstance(early, dg.SkipReason) and "due at" in early.skip_message
            # Due, the webhook still down: a delivery run tries again and keeps the alert.
            request = _tick_when_due(instance, flywheel, first.run_id)
            second = _run(deliver_alerts_job, instance, flywheel, tags=request.tags)
            assert second.success
            row = _alert_row(flywheel)
            assert (row["webhook_status"], row["webhook_attempts"]) == ("pending", 2)
            waited = (row["next_attempt_at"].timestamp()
                      - instance.get_run_record_by_id(second.run_id).end_time)
            assert RETRY < waited <= 2 * RETRY, waited  # the second wait is twice the first
            assert isinstance(_tick(instance, flywheel), dg.SkipReason)  # not due yet

    # Back up.
    hook = Webhook(Settings.from_env(flywheel).warehouse_path)
    try:
        monkeypatch.setenv("FLYWHEEL_ALERT_WEBHOOK_URL", hook.url)
        with dg.DagsterInstance.get() as instance:
            request = _tick_when_due(instance, flywheel, second.run_id)
            assert request.tags["flywheel/deliver_after"] == second.run_id
            third = _run(deliver_alerts_job, instance, flywheel, tags=request.tags)
            assert third.success
            [body] = hook.bodies
            assert body["key"] == ALERT.key and body["severity"] == "critical"
            row = _alert_row(flywheel)
            assert (row["webhook_status"], row["webhook_attempts"]) == ("delivered", 3)
            assert instance.get_run_by_id(third.run_id).tags[ALERTS_PENDING] == "0"
            # Nothing left: the sensor asks for nothing more.
            after = _tick(instance, flywheel)
            assert isinstance(after, dg.SkipReason)
    finally:
        hook.close()


def test_a_delivery_run_that_fails_is_asked_again_later(flywheel, monkeypatch):
    with _webhook_down(monkeypatch):
        with dg.DagsterInstance.get() as instance:
            first = _run(record_alert_job, instance, flywheel, run_config=alert_run_config(ALERT))
            request = _tick_when_due(instance, flywheel, first.run_id)
            # The delivery run fails before it can say what is left (its warehouse is not
            # there: a data directory that is a file).
            broken = flywheel / "not-a-directory"
            broken.write_text("")
            failed = _run(deliver_alerts_job, instance, broken, tags=request.tags,
                          raise_on_error=False)
            assert not failed.success
            # Asked again, after a back-off, under a new run key.
            skipped = _tick(instance, flywheel)
            assert isinstance(skipped, dg.SkipReason) and "due at" in skipped.skip_message
            time.sleep(RETRY + 0.2)
            again = _tick(instance, flywheel)
            assert isinstance(again, dg.RunRequest), again.skip_message
            assert again.run_key != request.run_key
            assert again.tags["flywheel/deliver_after"] == first.run_id
            assert _run(deliver_alerts_job, instance, flywheel, tags=again.tags).success
            assert _alert_row(flywheel)["webhook_attempts"] == 2


def test_without_a_webhook_nothing_is_asked_for(flywheel, monkeypatch):
    monkeypatch.delenv("FLYWHEEL_ALERT_WEBHOOK_URL", raising=False)
    with dg.DagsterInstance.get() as instance:
        run = _run(record_alert_job, instance, flywheel, run_config=alert_run_config(ALERT))
        assert _alert_row(flywheel)["webhook_status"] == "not_configured"
        assert instance.get_run_by_id(run.run_id).tags[ALERTS_PENDING] == "0"
        assert isinstance(_tick(instance, flywheel), dg.SkipReason)


def test_alerts_left_while_the_webhook_was_unset_go_when_it_is_set_again(flywheel, monkeypatch):
    with _webhook_down(monkeypatch):
        with dg.DagsterInstance.get() as instance:
            _run(record_alert_job, instance, flywheel, run_config=alert_run_config(ALERT))
    # Unset: nothing is asked for, but the next alert run still reads the true backlog.
    monkeypatch.delenv("FLYWHEEL_ALERT_WEBHOOK_URL")
    with dg.DagsterInstance.get() as instance:
        assert "no webhook" in _tick(instance, flywheel).skip_message
        other = Alert(key="drift:2026-01-05", source="drift_sensor", severity="warning",
                      title="drift")
        later = _run(record_alert_job, instance, flywheel, run_config=alert_run_config(other))
        assert instance.get_run_by_id(later.run_id).tags[ALERTS_PENDING] == "1"
    hook = Webhook(Settings.from_env(flywheel).warehouse_path)
    try:
        monkeypatch.setenv("FLYWHEEL_ALERT_WEBHOOK_URL", hook.url)
        with dg.DagsterInstance.get() as instance:
            request = _tick_when_due(instance, flywheel, later.run_id)
            assert _run(deliver_alerts_job, instance, flywheel, tags=request.tags).success
        assert [b["key"] for b in hook.bodies] == [ALERT.key]
    finally:
        hook.close()
