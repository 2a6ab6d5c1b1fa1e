"""The warehouse schema: a warehouse of an earlier version is brought up to date."""

import duckdb

from flywheel_assets import warehouse


def test_an_old_feedback_table_gets_its_signals_and_grades(tmp_path):
    path = tmp_path / "old.duckdb"
    conn = duckdb.connect(str(path))
    conn.execute("CREATE SCHEMA curated")
    # The version with one flag per signal.
    conn.execute("""CREATE TABLE curated.feedback_events (
        partition_date DATE, impression_id VARCHAR, request_id VARCHAR, ts TIMESTAMPTZ,
        user_key VARCHAR, item_id VARCHAR, position INTEGER, propensity DOUBLE,
        policy_version VARCHAR, device VARCHAR, n_interactions INTEGER,
        has_skip BOOLEAN, has_partial BOOLEAN, has_complete BOOLEAN, has_save BOOLEAN,
        has_thumbs_up BOOLEAN, has_thumbs_down BOOLEAN, max_value DOUBLE,
        first_interaction_ts TIMESTAMPTZ)""")
    conn.execute("""INSERT INTO curated.feedback_events (impression_id, has_skip, has_partial,
        has_complete, has_save, has_thumbs_up, has_thumbs_down) VALUES
        ('saved', FALSE, FALSE, TRUE, TRUE, FALSE, FALSE),
        ('silent', FALSE, FALSE, FALSE, FALSE, FALSE, FALSE)""")
    conn.close()
    with warehouse.connect(path) as conn:
        rows = conn.execute("SELECT impression_id, signals, grade FROM curated.feedback_events "
                            "ORDER BY 1").fetchall()
    assert rows == [("saved", ["complete", "save"], 3), ("silent", None, 0)]


def test_an_operator_command_waits_for_a_run_that_holds_the_warehouse(tmp_path, capsys):
    """A process holding the file read-write excludes every other process: a plain
    connection is refused at once; an operator's waits, says so once, and gets in when
    the holder lets go."""
    import subprocess
    import sys
    import time

    path = tmp_path / "warehouse.duckdb"
    with warehouse.connect(path):
        pass
    holder = subprocess.Popen([sys.executable, "-c", (
        "import duckdb, sys, time\n"
        f"conn = duckdb.connect({str(path)!r})\n"
        "print('holding', flush=True)\n"
        "time.sleep(5)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        try:
            with warehouse.connect(path, read_only=True):
                raise AssertionError("a second process opened a file another holds")
        except duckdb.IOException as exc:
            assert warehouse.LOCKED in str(exc)
        started = time.monotonic()
        with warehouse.operator_connect(path, read_only=True) as conn:
            assert conn.execute("SELECT 1").fetchall() == [(1,)]
        assert time.monotonic() - started > 0.5  # it waited for the holder
        assert capsys.readouterr().err.count("waiting for the warehouse") == 1
    finally:
        holder.kill()
        holder.wait()
