"""Two runs at once on a real Dagster instance on disk (the product's dagster.yaml: the
`duckdb` pool limited to one step) and one real DuckDB warehouse, each run in its own
process as the daemon would launch them: two backfill partitions of
`daily_rotation_job` (`flywheel rotate`, the runbook's replay), then the day's rotation
beside a sensor-triggered `retrain_job` of the day before. Both finish, no lock error,
no row lost (each day's raw tables equal, row for row, those of the same days rotated
one after the other), and the promotion audit counts each move of the champion once."""

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from flywheel_assets import warehouse
from flywheel_assets.settings import Settings
from flywheel_assets.train import model_store
from flywheel_assets_tests.helpers import land_day, partition_digests, rotate
from flywheel_assets_tests.test_rotation_small_world import CONFIG

D1, D2, D3 = "2026-01-01", "2026-01-02", "2026-01-03"
FLYWHEEL = [sys.executable, "-m", "flywheel_assets.cli"]
# What DuckDB says when a second process opens a file another holds.
LOCK_ERROR = "Could not set lock"
# A smaller world than the rotation tests' (runs here are slow: four processes share
# two cores).
INGEST = ["raw_impressions", "raw_interactions",
          "raw_candidates", "raw_items", "raw_users", "quarantined_events",
          "deletion_requests", "user_erasure"]
WORLD = replace(CONFIG, n_users=250, n_items=200, requests_per_day=800)

# retrain_job for a day, as drift_sensor requests it (trigger=drift), on the instance
# at DAGSTER_HOME.
RETRAIN = textwrap.dedent("""
    import sys
    import dagster as dg
    from flywheel_assets.definitions import build_definitions
    job = build_definitions(sys.argv[1]).resolve_job_def("retrain_job")
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(partition_key=sys.argv[2], instance=instance,
                                        raise_on_error=False, tags={"trigger": "drift"})
    for event in result.all_events:
        if event.is_step_failure:
            print(event.step_key, event.event_specific_data.error.message, file=sys.stderr)
    sys.exit(0 if result.success else 1)
""")


def _home(root: Path) -> Path:
    """A new instance: no storage yet (the first two commands create it at once)."""
    home = root / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(Path(__file__).parents[2] / "flywheel_assets" / "dagster.yaml", home)
    return home


def _start(command: list[str], home: Path) -> subprocess.Popen:
    return subprocess.Popen(command, env={**os.environ, "DAGSTER_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(processes: list[subprocess.Popen]) -> list[str]:
    """Each process's output; fails naming the one that failed."""
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=900)
        assert process.returncode == 0, (process.args, err[:1500], err[-1500:])
        outputs.append(out + err)
    return outputs


def _raw_digests(data_dir: Path, day: str) -> dict[str, tuple]:
    """Rows and a digest of the sorted rows of each raw table's partition (times of
    writing and run ids left out)."""
    with warehouse.connect(data_dir / "warehouse.duckdb", read_only=True) as conn:
        return partition_digests(conn, ["raw"], day, skip=("run_id",))


def _audit(data_dir: Path) -> list[tuple]:
    with warehouse.connect(data_dir / "warehouse.duckdb", read_only=True) as conn:
        return conn.execute("SELECT CAST(partition_date AS VARCHAR), previous_champion, "
                            "new_champion, promoted, moved FROM ml.promotions "
                            "WHERE actor = 'gate' ORDER BY decided_at").fetchall()


def _assert_the_audit_counts_each_move_once(data_dir: Path) -> list[tuple]:
    """Each row that says it moved the pointer moved it from where the row before left
    it; the moves are the champion history, one for one."""
    rows, pointer, moves = _audit(data_dir), None, []
    for day, previous, new, promoted, moved in rows:
        if moved:
            assert promoted and new != pointer, rows
            moves.append(new)
            pointer = new
    models = Settings.from_env(data_dir).models_dir
    assert moves == model_store.champion_history(models), (rows, model_store.champion_history(models))
    assert pointer == model_store.champion_version(models)
    return rows


def _checks_passed(data_dir: Path, day: str) -> dict[str, bool]:
    with warehouse.connect(data_dir / "warehouse.duckdb", read_only=True) as conn:
        return dict(conn.execute("SELECT check_name, passed FROM monitor.check_results "
                                 "WHERE partition_date = ? AND check_name IN "
                                 "('rows_reconcile', 'landing_files_read')",
                                 [day]).fetchall())


@pytest.mark.slow
def test_two_partitions_and_a_retrain_beside_a_rotation_all_finish_and_count_once(tmp_path):
    together, apart = tmp_path / "together", tmp_path / "apart"
    land_day(together, WORLD, D1)
    land_day(together, WORLD, D2)
    shutil.copytree(together / "landing", apart / "landing")
    home = _home(tmp_path)

    # Two backfill partitions at once.
    outputs = _finish([_start([*FLYWHEEL, "rotate", "--day", day, "--data-dir", str(together)],
                              home) for day in (D1, D2)])
    assert not any(LOCK_ERROR in out for out in outputs), outputs
    # The same days ingested one after the other (raw tables are ingestion's and
    # erasure's alone).
    with dg.DagsterInstance.ephemeral() as instance:
        for day in (D1, D2):
            rotate(apart, day, instance, selection=INGEST)
    for day in (D1, D2):
        expected = _raw_digests(apart, day)
        assert expected["raw.impressions"][0] > 0 and expected["raw.interactions"][0] > 0
        assert _raw_digests(together, day) == expected, day
        assert set(_checks_passed(together, day).values()) == {True}, day
    _assert_the_audit_counts_each_move_once(together)

    # The next day's rotation beside a retrain of the day before (as drift_sensor asks).
    land_day(together, WORLD, D3)
    (tmp_path / "retrain.py").write_text(RETRAIN)
    outputs = _finish([
        _start([*FLYWHEEL, "rotate", "--day", D3, "--data-dir", str(together)], home),
        _start([sys.executable, str(tmp_path / "retrain.py"), str(together), D2], home)])
    assert not any(LOCK_ERROR in out for out in outputs), outputs
    assert set(_checks_passed(together, D3).values()) == {True}
    rows = _assert_the_audit_counts_each_move_once(together)
    # Every gate application is one row: two for D2 (its rotation, the retrain), one each
    # for D1 and D3.
    assert sorted(r[0] for r in rows) == [D1, D2, D2, D3], rows
    with dg.DagsterInstance.from_config(str(home)) as instance:
        statuses = {r.dagster_run.status for r in instance.get_run_records()}
    assert statuses == {dg.DagsterRunStatus.SUCCESS}
