"""`flywheel backfill`'s order and scheduler, without a warehouse (the lake test,
test_backfill.py, runs it for real)."""

import sys

from flywheel_assets import backfill
from flywheel_assets.cli import main

T = backfill.Task


def test_only_a_days_ingest_may_run_beside_the_day_befores_rest():
    """The waits the backfill keeps (its module doc says why each is needed)."""
    needs = backfill.tasks_and_needs(["d1", "d2", "d3"])
    assert needs[T("d1", "ingest")] == set()
    assert needs[T("d2", "ingest")] == {T("d1", "ingest"), T("d1", "erasure")}
    assert needs[T("d2", "erasure")] == {T("d2", "ingest"), T("d1", "rest")}
    assert needs[T("d3", "rest")] == {T("d3", "erasure")}
    assert T("d1", "rest") not in needs[T("d2", "ingest")]


def test_the_scheduler_keeps_the_order_and_the_limit_and_stops_at_a_failure():
    days = ["d1", "d2", "d3"]

    def command(task):
        return [sys.executable, "-c", "import time; time.sleep(0.4)"]
    outcome = backfill.run(days, 2, command, log=lambda line: None, poll_seconds=0.05)
    spans, needs = outcome["spans"], backfill.tasks_and_needs(days)
    assert outcome["failures"] == [] and outcome["done"] == 9 and outcome["most_at_once"] == 2
    for task, waits in needs.items():  # nothing started before what it waits for ended
        assert all(spans[str(task)][0] >= spans[str(w)][1] for w in waits), task
    # a day's ingest did run beside the day before's rest
    assert spans["d2 ingest"][0] < spans["d1 rest"][1]
    one = backfill.run(days, 1, command, log=lambda line: None, poll_seconds=0.05)
    assert one["most_at_once"] == 1 and one["done"] == 9

    def failing(task):
        code = "1" if task == T("d2", "ingest") else "0"
        return [sys.executable, "-c", f"import sys; print('boom'); sys.exit({code})"]
    failed = backfill.run(days, 2, failing, log=lambda line: None, poll_seconds=0.05)
    assert failed["failures"] == ["d2 ingest failed (1): boom"]
    assert "d3 ingest" not in failed["spans"] and "d2 erasure" not in failed["spans"]


def test_a_parallel_backfill_on_the_duckdb_file_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("FLYWHEEL_WAREHOUSE_CATALOG", raising=False)
    code = main(["backfill", "--from", "2026-01-01", "--to", "2026-01-02", "--parallel", "2",
                 "--data-dir", str(tmp_path)])
    assert code == 2
    assert "takes one writer at a time" in capsys.readouterr().err
    assert not (tmp_path / "warehouse.duckdb").exists()


def test_the_instance_a_backfill_writes_lets_its_stages_into_the_pool(tmp_path):
    from pathlib import Path

    (tmp_path / "dagster.yaml").write_text(backfill.instance_config(3))
    assert backfill.pool_limit(tmp_path) == 3
    packaged = Path(backfill.__file__).parent  # the embedded instance: one writer
    assert backfill.pool_limit(packaged) == 1
