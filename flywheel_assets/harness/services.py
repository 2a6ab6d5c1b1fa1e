"""A real Dagster instance (webserver, daemon and code servers) that starts, reports
ready and stops again, for operator fire drills and end-to-end tests.

``dagster dev`` is started in a process group of its own and stopped by signalling the
whole group, with SIGKILL after a grace period, and the stop is verified: no process of
the group is left. Stopping only ``dagster dev`` is not enough: started from a shell in
the background it ignored SIGTERM (see ``_EXEC_WITH_DEFAULT_SIGINT``) and its code
servers outlived it, and while it shuts down it restarts a code server that exited
first (the newcomer is signalled too).

"Ready" means more than "the port answers": the webserver answers GraphQL, it serves
this instance (its ``DAGSTER_HOME``), every code location of the workspace is loaded,
and every daemon the instance requires reports healthy, so sensors and schedules tick.

Standard library only, so the operator tooling works wherever the product is installed.

    with DagsterServices(tmp / "dagster_home", env={"FLYWHEEL_DATA_DIR": str(tmp)}) as s:
        print(s.url, s.graphql("{ version }"))
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]

# One query answers "is it ready?": instance identity, daemon heartbeats and the load
# state of every code location (Dagster 1.13 schema).
READINESS_QUERY = """
query FlywheelServicesReadiness {
  instance {
    info
    daemonHealth {
      allDaemonStatuses { daemonType required healthy lastHeartbeatErrors { message } }
    }
  }
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
    ... on PythonError { message }
  }
}
"""

# The child resets SIGINT to its default before it becomes `dagster dev`. A process
# started in the background by a non-interactive shell inherits SIGINT *ignored*, and
# Dagster maps SIGTERM onto SIGINT's handler, so without this reset SIGTERM would be
# ignored too (the trap noted in the design) and every stop would wait for SIGKILL.
_EXEC_WITH_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])")


class ServicesError(RuntimeError):
    """The services did not start, did not stop, or GraphQL answered with errors."""


def default_workspace() -> Path:
    """The repository's ``workspace.yaml`` (next to the package's parent directory)."""
    return PACKAGE_DIR.parent / "workspace.yaml"


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral port that is free now (the kernel picks it, so concurrent callers
    get different ones)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def group_alive(pgid: int) -> bool:
    """True while any process (a zombie included) is in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member exists that we may not signal
        return True
    return True


def group_members(pgid: int) -> list[int]:
    """Pids of the running (not zombie) members of ``pgid`` (Linux ``/proc``; elsewhere
    the group leader's pid while the group exists)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return [pgid] if group_alive(pgid) else []
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ..."; comm may contain spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return sorted(members)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    # DuckDB's bindings list every object they leak at interpreter exit, one per line
    # (the summary line "nanobind: leaked N instances!" stays); they would bury the error.
    kept = [line for line in text.splitlines() if not line.startswith(" - leaked ")]
    return "\n".join(kept[-lines:])


class DagsterServices:
    """``dagster dev`` (webserver + daemon + one code server per location) on
    ``dagster_home``, as a context manager.

    ``dagster_home`` receives the packaged instance config (of the kind
    FLYWHEEL_DAGSTER_INSTANCE chooses) if it has none. ``port=None``
    picks a free ephemeral port (and tries another one if that port is taken before the
    webserver binds it). ``env`` is added to the current environment of the services
    (``FLYWHEEL_DATA_DIR`` for instance); ``DAGSTER_HOME`` is always ``dagster_home``.
    Output of all processes goes to ``log_path`` under ``dagster_home/service_logs/``.
    """

    def __init__(self, dagster_home: str | os.PathLike, workspace: str | os.PathLike | None = None,
                 host: str = "127.0.0.1", port: int | None = None,
                 env: Mapping[str, str] | None = None, startup_timeout: float = 180.0,
                 stop_timeout: float = 20.0):
        self.dagster_home = Path(dagster_home).resolve()
        self.workspace = Path(workspace).resolve() if workspace else default_workspace()
        self.host = host
        self.port = port
        self._choose_port = port is None
        self.env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.log_path: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._pgid: int | None = None
        self._log_file = None
        # Whether the last stop needed SIGKILL (SIGTERM was not enough in time).
        self.killed: bool | None = None

    # -- public ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise ServicesError("the services are not started")
        return f"http://{self.host}:{self.port}"

    @property
    def pgid(self) -> int | None:
        """Process group of ``dagster dev`` and everything it started (None before
        start)."""
        return self._pgid

    def __enter__(self) -> "DagsterServices":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> "DagsterServices":
        """Start the services and return once they are ready (see the module doc);
        raise ``ServicesError`` with the end of the log if they die or time out."""
        if self._proc is not None:
            raise ServicesError("the services are already started")
        if not self.workspace.is_file():
            raise FileNotFoundError(f"no workspace file at {self.workspace}")
        dagster = Path(sys.executable).with_name("dagster")
        if not dagster.exists():
            raise FileNotFoundError(f"no dagster executable next to {sys.executable}")
        self._write_instance_config()
        attempts = 3 if self._choose_port else 1
        for attempt in range(1, attempts + 1):
            if self._choose_port:
                self.port = free_port(self.host)
            self._launch(dagster)
            try:
                self._wait_until_ready()
                return self
            except _PortTaken:
                self.stop()
                if attempt == attempts:
                    raise ServicesError(f"port {self.port} is taken by another server; "
                                        f"log {self.log_path}:\n{_tail(self.log_path)}")
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL after ``stop_timeout`` seconds,
        then wait until no process of the group is left (raise ``ServicesError`` if one
        is). Safe to call twice."""
        proc, pgid = self._proc, self._pgid
        if proc is None or pgid is None:
            return
        try:
            signalled = set(group_members(pgid))
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + self.stop_timeout
            while time.monotonic() < deadline:
                proc.poll()  # reap the leader as soon as it exits
                members = group_members(pgid)
                if not members:
                    break
                # `dagster dev` restarts a code server that exits while it is itself
                # still shutting down; the new one missed the group's SIGTERM.
                for pid in set(members) - signalled:
                    try:
                        os.kill(pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                    signalled.add(pid)
                time.sleep(0.2)
            self.killed = bool(group_members(pgid))
            if self.killed:
                self._signal_group(signal.SIGKILL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            # Orphaned members are reaped by init; give it a moment.
            deadline = time.monotonic() + 10
            while group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if group_alive(pgid):
                raise ServicesError(f"processes of group {pgid} survived SIGKILL: "
                                    f"{group_members(pgid)}")
        finally:
            self._proc = None
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            atexit.unregister(self.stop)

    def graphql(self, query: str, variables: Mapping | None = None, timeout: float = 60.0) -> dict:
        """POST a query to the webserver and return its ``data``; raise
        ``ServicesError`` with the messages if GraphQL reports errors."""
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            try:
                payload = json.loads(detail)
            except ValueError:
                raise ServicesError(f"GraphQL HTTP {exc.code}: {detail}") from exc
        if payload.get("errors"):
            messages = "; ".join(e.get("message", str(e)) for e in payload["errors"])
            raise ServicesError(f"GraphQL errors: {messages}")
        return payload["data"]

    def readiness(self) -> str | None:
        """None when ready, else why not (one GraphQL round trip). A code location that
        failed to load raises ``ServicesError``: waiting will not fix it."""
        try:
            data = self.graphql(READINESS_QUERY, timeout=10)
        except (OSError, ValueError, ServicesError) as exc:
            return f"webserver not answering ({exc.__class__.__name__}: {exc})"
        # Someone else's server on our port (it bound the port first; ours then fails
        # to bind) must never pass for ours: its instance lives in another directory.
        served_home = re.search(r"local_artifact_storage:.*?base_dir:\s*(\S+)",
                                data["instance"].get("info") or "", re.DOTALL)
        if served_home and Path(served_home.group(1)).resolve() != self.dagster_home:
            raise _PortTaken()
        workspace = data["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            return f"workspace: {workspace.get('message', workspace['__typename'])}"
        entries = workspace["locationEntries"]
        if not entries:
            return "no code locations yet"
        for entry in entries:
            loaded = entry["locationOrLoadError"] or {}
            if loaded.get("__typename") == "PythonError":
                raise ServicesError(f"code location {entry['name']!r} failed to load: "
                                    f"{loaded.get('message', '').strip()}")
        loading = [e["name"] for e in entries if e["loadStatus"] != "LOADED"]
        if loading:
            return f"code locations loading: {', '.join(loading)}"
        daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        required = [d for d in daemons if d["required"]]
        if not required:
            return "no daemon heartbeat yet"
        unhealthy = [d["daemonType"] for d in required if not d["healthy"]]
        if unhealthy:
            return f"daemons not healthy yet: {', '.join(unhealthy)}"
        return None

    # -- internals ------------------------------------------------------------------

    def _write_instance_config(self) -> None:
        from flywheel_assets.settings import ensure_instance_config

        ensure_instance_config(self.dagster_home)

    def _launch(self, dagster: Path) -> None:
        # Not DAGSTER_HOME/logs: that is Dagster's telemetry queue, which its daemon
        # moves away and posts to Dagster's telemetry server (seen with dagster 1.13,
        # telemetry disabled in dagster.yaml or not).
        logs = self.dagster_home / "service_logs"
        logs.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.log_path = logs / f"dagster-dev-{stamp}-{self.port}.log"
        self._log_file = open(self.log_path, "ab")
        env = {**os.environ, **self.env, "DAGSTER_HOME": str(self.dagster_home)}
        argv = [str(dagster), "dev", "-w", str(self.workspace), "-h", self.host,
                "-p", str(self.port)]
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _EXEC_WITH_DEFAULT_SIGINT, *argv],
            cwd=self.workspace.parent, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)
        self._pgid = self._proc.pid  # a new session: the leader's pid is the group id
        atexit.register(self.stop)

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self._pgid, signum)
        except ProcessLookupError:
            pass

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        reason = "not asked yet"
        while True:
            if self._proc.poll() is not None:
                log = _tail(self.log_path)
                if "address already in use" in log.lower():
                    raise _PortTaken()
                raise ServicesError(f"dagster dev exited with code {self._proc.returncode} "
                                    f"before it was ready; log {self.log_path}:\n{log}")
            if self._port_taken_in_log():
                raise _PortTaken()
            reason = self.readiness()
            if reason is None:
                return
            if time.monotonic() > deadline:
                raise ServicesError(f"not ready after {self.startup_timeout:.0f} s ({reason}); "
                                    f"log {self.log_path}:\n{_tail(self.log_path)}")
            time.sleep(0.5)

    def _port_taken_in_log(self) -> bool:
        # The webserver fails to bind but `dagster dev` keeps running without it.
        return "address already in use" in _tail(self.log_path, 200).lower()


class _PortTaken(ServicesError):
    """Our port was taken by someone else between choosing it and binding it."""

    def __init__(self):
        super().__init__("port taken")


# -- PostgreSQL --------------------------------------------------------------------------

POSTGRES_HINT = ("Debian's PostgreSQL server is not installed (no initdb under "
                 "/usr/lib/postgresql/*/bin): run `make postgres`, or apt-get install "
                 "postgresql")


def postgres_bindir() -> Path:
    """Where Debian's `postgresql` package put initdb and pg_ctl (the newest version)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    if not found:
        raise FileNotFoundError(POSTGRES_HINT)
    return found[-1].parent


class PostgresServer:
    """A throwaway PostgreSQL server: a new cluster in a temporary directory, listening
    on 127.0.0.1 only (a free port), with one database and one user who logs in with a
    password over TCP (scram-sha-256), as a real deployment would. Stopped, and its
    directory removed, on exit.

    As root, the server runs as the `postgres` system user that Debian's package
    creates (PostgreSQL refuses to run as root), in a directory that user owns.

        with PostgresServer() as pg:
            os.environ["FLYWHEEL_POSTGRES_URL"] = pg.url
    """

    def __init__(self, user: str = "flywheel", password: str = "flywheel-test-password",
                 database: str = "dagster", host: str = "127.0.0.1",
                 startup_timeout: float = 60.0):
        self.user, self.password, self.database, self.host = user, password, database, host
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.root: Path | None = None
        self._bindir: Path | None = None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL (psycopg2 driver) of the database, password included."""
        if self.port is None:
            raise ServicesError("the PostgreSQL server is not started")
        return (f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/"
                f"{self.database}")

    def __enter__(self) -> "PostgresServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _command(self, *argv: str) -> list[str]:
        """A server program's command line, as the `postgres` user when we are root."""
        command = [str(self._bindir / argv[0]), *argv[1:]]
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command

    def _run(self, *argv: str, env: Mapping[str, str] | None = None) -> None:
        done = subprocess.run(self._command(*argv), cwd=self.root, env={**os.environ, **(env or {})},
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=self.startup_timeout)
        if done.returncode != 0:
            log = self.root / "postgres.log"
            raise ServicesError(f"{' '.join(argv[:1])} failed ({done.returncode}): "
                                f"{done.stderr.strip() or done.stdout.strip()}"
                                + (f"\nserver log:\n{_tail(log)}" if log.exists() else ""))

    def start(self) -> "PostgresServer":
        import shutil
        import tempfile

        self._bindir = postgres_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="flywheel-postgres-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        (self.root / "password").write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.root / "password", "postgres", "postgres")
        atexit.register(self.stop)
        try:
            self._run("initdb", "-D", "data", "-U", self.user, "--pwfile=password",
                      "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                      "--no-sync", "--locale=C.UTF-8")
            self.port = free_port(self.host)
            # Sockets in our directory, not /var/run/postgresql (root's, absent in CI);
            # fsync off: a test server, thrown away after.
            options = (f"-c listen_addresses={self.host} -p {self.port} "
                       f"-c unix_socket_directories={self.root} -c fsync=off "
                       f"-c max_connections=200")
            self._run("pg_ctl", "-D", "data", "-l", "postgres.log", "-o", options,
                      "-w", "-t", str(int(self.startup_timeout)), "start")
            self._run("createdb", "-h", self.host, "-p", str(self.port), "-U", self.user,
                      self.database, env={"PGPASSWORD": self.password})
        except BaseException:
            self.stop()
            raise
        return self

    def create_database(self, name: str) -> str:
        """Another database on the server; its name."""
        self._run("createdb", "-h", self.host, "-p", str(self.port), "-U", self.user, name,
                  env={"PGPASSWORD": self.password})
        return name

    def ducklake_catalog(self, database: str | None = None) -> str:
        """What `FLYWHEEL_WAREHOUSE_CATALOG` names for a lake catalogued in ``database``."""
        return (f"postgres:dbname={database or self.database} host={self.host} "
                f"port={self.port} user={self.user} password={self.password}")

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory. Safe to call twice."""
        import shutil

        root, self.root = self.root, None
        if root is None:
            return
        if (root / "data" / "postmaster.pid").exists():
            subprocess.run(self._command("pg_ctl", "-D", str(root / "data"), "-m", "fast", "-w",
                                         "stop"),
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
        self.port = None
