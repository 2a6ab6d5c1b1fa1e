"""A run killed with SIGKILL: on a real Dagster instance on disk (the product's
dagster.yaml: pools limited to one step), a run in the `duckdb` pool is killed while it
holds the slot; the product's `dead_run_sweeper` sensor marks it failed and frees the
slot, and the next run in the pool starts and finishes instead of waiting forever."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import pytest

from flywheel_assets.monitor.sensors import dead_run_sweeper

# A run of one asset in the product's `duckdb` pool that holds it for SECONDS.
RUN = textwrap.dedent("""
    import sys, time
    import dagster as dg

    @dg.asset(pool="duckdb")
    def holds_the_pool():
        time.sleep(float(sys.argv[1]))

    job = dg.Definitions(assets=[holds_the_pool], jobs=[dg.define_asset_job(
        "pool_job", selection=[holds_the_pool])]).resolve_job_def("pool_job")
    with dg.DagsterInstance.get() as instance:
        sys.exit(0 if job.execute_in_process(instance=instance).success else 1)
""")


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(Path(__file__).parents[2] / "flywheel_assets" / "dagster.yaml", home)
    (tmp_path / "run.py").write_text(RUN)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return tmp_path


def _start(home: Path, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(home / "run.py"), str(seconds)],
                            env={**os.environ}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _holder(instance) -> list[str]:
    return [s.run_id for s in instance.event_log_storage.get_concurrency_info("duckdb").claimed_slots]


def _wait_for_the_slot(instance, process) -> str:
    for _ in range(600):
        if _holder(instance):
            return _holder(instance)[0]
        assert process.poll() is None, "the run ended before it held the pool"
        time.sleep(0.1)
    raise AssertionError("the run never held the duckdb pool")


def test_a_killed_run_is_marked_failed_and_its_pool_slot_freed(home):
    with dg.DagsterInstance.get() as instance:
        process = _start(home, 300)
        run_id = _wait_for_the_slot(instance, process)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        # Killed: the instance still holds it as started, with the slot.
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        assert _holder(instance) == [run_id]

        skip = dead_run_sweeper(dg.build_sensor_context(instance=instance))
        assert run_id in skip.skip_message
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        assert _holder(instance) == []
        failure = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        assert f"pid {process.pid}" in failure[-1].dagster_event.message

        # The next run in the pool starts and finishes (it would wait forever behind
        # the dead run's slot).
        assert _start(home, 0).wait(timeout=300) == 0


def test_a_run_whose_worker_lives_is_left_alone(home):
    with dg.DagsterInstance.get() as instance:
        process = _start(home, 300)
        try:
            run_id = _wait_for_the_slot(instance, process)
            skip = dead_run_sweeper(dg.build_sensor_context(instance=instance))
            assert skip.skip_message == "every started run has its worker"
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
            assert _holder(instance) == [run_id]
        finally:
            process.kill()
            process.wait()
