from pathlib import Path

import pytest

from flywheel_assets.serve.serving import popularity_policy
from flywheel_assets.simulation import world
from flywheel_assets.simulation.config import WorldConfig

DAY1 = "2026-01-01"
# Modules that share the session's live instance run in the same pytest-xdist worker.
LIVE_MODULES = ("test_live_instance.py", "test_ui_browser.py")


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: ignored without it
def pytest_xdist_make_scheduler(config, log):
    """With pytest-xdist (`make test` and `make test-fast` run two workers), a module's
    tests go to one worker, so its fixture (a world turned for days) is built once; the
    live-instance modules go together, so the instance starts once. Another ``--dist``
    than the default keeps its own scheduling."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "live" if module.endswith(LIVE_MODULES) else module

    return ByModule(config, log)


@pytest.fixture
def small_world() -> WorldConfig:
    """A world small enough for unit tests, same code paths as the default."""
    return WorldConfig(n_users=400, n_items=300, requests_per_day=1500, pool_size=20)


@pytest.fixture
def landed_day(tmp_path: Path, small_world: WorldConfig) -> Path:
    """A data dir with one simulated landing day, served by the popularity policy."""
    world.run_day(tmp_path, tmp_path / "landing", small_world, DAY1, popularity_policy())
    return tmp_path


# A live instance for the real-daemon scenario and the browser tests: a small world
# turned for two days, then the webserver and daemon started on a temporary
# DAGSTER_HOME and a drifted day landed; the loop reacts by itself (landing_sensor →
# rotation → drift_report → drift_sensor → retrain_job → gate). Stopped, by process
# group, at the end of the session. The instance is the Postgres-backed one
# (FLYWHEEL_DAGSTER_INSTANCE=postgres) on a real PostgreSQL server started for the
# session; the embedded (SQLite) instance runs the same loop in the runbook's drill
# (reliability/test_runbook.py) and under every other test.
LIVE_WORLD = WorldConfig(n_users=600, n_items=300, requests_per_day=3000, pool_size=20)
LIVE_TIMEOUT_SECONDS = 420


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server (Debian's package; `make test` installs it if absent) in
    a temporary directory on 127.0.0.1, for the session."""
    from flywheel_assets.harness.services import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def live_instance(tmp_path_factory, postgres_server):
    import socket

    from flywheel_assets.harness import drill
    from flywheel_assets.harness.services import DagsterServices, group_members
    from flywheel_assets.settings import INSTANCE_ENV, POSTGRES_URL_ENV

    data_dir = tmp_path_factory.mktemp("live") / "data"
    on_postgres = {INSTANCE_ENV: "postgres", POSTGRES_URL_ENV: postgres_server.url}
    # Only while this fixture works in this process: later tests of the worker get the
    # embedded instance they expect.
    with pytest.MonkeyPatch.context() as env:
        for name, value in on_postgres.items():
            env.setenv(name, value)
        settings = drill.warm_up(data_dir, LIVE_WORLD, days=2)
    services = DagsterServices(settings.dagster_home,
                               env={"FLYWHEEL_DATA_DIR": str(data_dir), **on_postgres})
    with services:
        # A fresh instance greets its first visitor with a dialog over every page.
        services.graphql("mutation { setNuxSeen }")
        outcome = drill.land_drift_and_wait(services, settings, LIVE_WORLD, drift_day=3,
                                            timeout=LIVE_TIMEOUT_SECONDS)
        members, port = group_members(services.pgid), services.port
        yield {"services": services, "settings": settings, "outcome": outcome,
               "postgres_url": postgres_server.url}
    # Stopped: every process of the group (dagster dev, webserver, daemon, code servers)
    # is gone and the port is closed.
    assert len(members) >= 4, members
    assert not group_members(services.pgid), "a process of the services outlived the session"
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))
