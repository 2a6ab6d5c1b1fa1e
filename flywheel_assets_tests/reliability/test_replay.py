"""A product run killed with SIGKILL in the middle of a rotation: the dead run is swept
(marked failed, its pool slot freed), the replay the runbook gives (`flywheel rotate`)
starts at once and finishes, and the day's raw and curated tables are the same, row for
row, as those of a rotation that was never interrupted. Real DuckDB files, a real
Dagster instance on disk, the product's CLI in its own processes."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from flywheel_assets import warehouse
from flywheel_assets.harness.example_logs import write_minimal_day
from flywheel_assets.monitor.sensors import dead_run_sweeper
from flywheel_assets_tests.helpers import partition_digests

DAY = "2026-03-01"
FLYWHEEL = [sys.executable, "-m", "flywheel_assets.cli"]


def _env(home: Path) -> dict:
    return {**os.environ, "DAGSTER_HOME": str(home), "FLYWHEEL_START_DATE": DAY,
            "FLYWHEEL_SIGNALS_GRADES": "click:1"}


def _rotate(data_dir: Path, home: Path) -> subprocess.Popen:
    return subprocess.Popen([*FLYWHEEL, "rotate", "--day", DAY, "--data-dir", str(data_dir)],
                            env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _home(root: Path) -> Path:
    home = root / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(Path(__file__).parents[2] / "flywheel_assets" / "dagster.yaml", home)
    return home


def _contents(data_dir: Path) -> dict[str, tuple]:
    """Rows and a digest of the sorted rows of every raw and curated table's partition
    (write times left out)."""
    with warehouse.connect(data_dir / "warehouse.duckdb") as conn:
        return partition_digests(conn, ["raw", "curated"], DAY)


def _wait_for_step(instance, step: str, process: subprocess.Popen) -> str:
    for _ in range(3000):
        for record in instance.get_run_records():
            run_id = record.dagster_run.run_id
            done = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
            if any(e.dagster_event.step_key == step for e in done):
                return run_id
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        time.sleep(0.1)
    raise AssertionError(f"{step} never finished")


@pytest.mark.slow
def test_a_rotation_killed_half_way_is_swept_and_replayed_to_the_same_tables(tmp_path):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    for data_dir in (clean, killed):
        write_minimal_day(data_dir / "landing", DAY, seed=0, requests=600)
    clean_home, home = _home(tmp_path / "clean_instance"), _home(tmp_path / "instance")
    assert _rotate(clean, clean_home).wait(timeout=600) == 0

    process = _rotate(killed, home)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # Killed once ingestion has written the day, while curation runs.
        run_id = _wait_for_step(instance, "landing_day", process)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        dead_run_sweeper(dg.build_sensor_context(instance=instance))
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE

    replay = _rotate(killed, home)
    assert replay.wait(timeout=600) == 0, replay.stderr.read().decode()[-2000:]
    expected, got = _contents(clean), _contents(killed)
    assert expected["raw.impressions"][0] > 0 and expected["curated.curated_feedback"][0] > 0
    assert got == expected
