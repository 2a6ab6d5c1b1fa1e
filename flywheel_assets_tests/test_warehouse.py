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


def test_two_warehouses_compare_row_for_row_and_sums_to_their_last_bits(tmp_path):
    """`warehouse.compare` (what says a lake or a parallel backfill holds what the file
    or the serial run holds): a sum's last bits may differ, nothing else may."""
    from flywheel_assets import warehouse

    insert = ("INSERT INTO curated.user_profiles (partition_date, user_key, segment, rate, "
              "factors) VALUES ")
    u1 = "('2026-01-01', 'u1', NULL, 0.14 + $e, [4e-5, 1.0])"
    u2 = "('2026-01-01', 'u2', 'new', 0.2, [1.0 + $e, 2.0])"
    with warehouse.connect(tmp_path / "a.duckdb") as a, warehouse.connect(tmp_path / "b.duckdb") as b:
        a.execute(insert + f"{u1}, {u2}", {"e": 0.0})
        # the same rows, written in the other order, sums off in their last bits
        b.execute(insert + f"{u2}, {u1}", {"e": 2e-16})
        assert b.execute("SELECT rate FROM curated.user_profiles WHERE user_key = 'u1'"
                         ).fetchone()[0] != 0.14
        assert warehouse.compare(a, b) == {}
        b.execute("UPDATE curated.user_profiles SET rate = 0.1401 WHERE user_key = 'u1'")
        assert warehouse.compare(a, b) == {"curated.user_profiles": "rate: 0.14 != 0.1401"}
        b.execute("UPDATE curated.user_profiles SET rate = 0.14, segment = 'x' WHERE user_key = 'u1'")
        assert "segment" in warehouse.compare(a, b)["curated.user_profiles"]
        b.execute("UPDATE curated.user_profiles SET segment = NULL, factors = [4.1e-5, 1.0] "
                  "WHERE user_key = 'u1'")
        assert "factors" in warehouse.compare(a, b)["curated.user_profiles"]
        b.execute("UPDATE curated.user_profiles SET factors = [4e-5, 1.0] WHERE user_key = 'u1'")
        b.execute("INSERT INTO raw.users (partition_date, user_key) VALUES ('2026-01-01', 'u3')")
        assert warehouse.compare(a, b) == {"raw.users": "0 rows != 1 rows"}
        # a data dir in a path is not a difference when each side names its own
        for conn, root in ((a, "/data/a"), (b, "/data/b")):
            conn.execute("DELETE FROM raw.users")
            conn.execute("INSERT INTO ml.model_registry (version, path) VALUES ('m1', ?)",
                         [f"{root}/models/m1"])
        assert warehouse.compare(a, b, {"/data/a": "$DATA"}, {"/data/b": "$DATA"}) == {}
        assert "path" in warehouse.compare(a, b)["ml.model_registry"]


def test_a_catalog_makes_the_warehouse_a_lake(monkeypatch, tmp_path):
    from flywheel_assets import warehouse
    from flywheel_assets.settings import Settings

    for name in ("FLYWHEEL_WAREHOUSE_CATALOG", "FLYWHEEL_WAREHOUSE_DATA", "AWS_REGION",
                 "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert Settings.from_env(tmp_path).warehouse == tmp_path.resolve() / "warehouse.duckdb"
    monkeypatch.setenv("FLYWHEEL_WAREHOUSE_CATALOG",
                       "postgres:dbname=lake host=db user=flywheel password=s3cret")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("FLYWHEEL_S3_ENDPOINT", "127.0.0.1:9000")
    lake = Settings.from_env(tmp_path).warehouse
    assert isinstance(lake, warehouse.Lake)
    assert lake.data_path == str(tmp_path.resolve() / "lake") + "/"
    assert "s3cret" not in str(lake) and "postgres catalog" in str(lake)
    assert "s3cret" not in repr(lake) and "secret" not in repr(lake)
    # a relative folder is the data dir's, wherever the command starts
    monkeypatch.setenv("FLYWHEEL_WAREHOUSE_DATA", "file:lake-files")
    assert Settings.from_env(tmp_path).warehouse.data_path == str(tmp_path.resolve() / "lake-files") + "/"
    monkeypatch.setenv("FLYWHEEL_WAREHOUSE_DATA", "s3://bucket/lake/")
    lake = Settings.from_env(tmp_path).warehouse
    assert lake.data_path == "s3://bucket/lake/"
    assert dict(lake.s3) == {"KEY_ID": "key", "SECRET": "secret", "ENDPOINT": "127.0.0.1:9000",
                             "URL_STYLE": "path", "USE_SSL": "true"}


def test_a_lake_write_that_loses_a_race_is_tried_again_and_nothing_else_is(tmp_path):
    import duckdb

    from flywheel_assets import warehouse

    lost = duckdb.TransactionException("TransactionContext Error: Failed to commit: Failed to "
                                       "commit DuckLake transaction. Transaction conflict - "
                                       "attempting to insert into table with index 3")
    assert warehouse.lost_a_race(lost) and not warehouse.lost_a_race(duckdb.Error("disk full"))
    tries = []

    def work():
        tries.append(1)
        if len(tries) < 3:
            raise lost
        return "done"
    conn = duckdb.connect()
    assert warehouse.retry_races(work, conn) == "done" and len(tries) == 3
    tries.clear()
    try:
        warehouse.retry_races(work, None)  # no lake: not retried
    except duckdb.TransactionException:
        pass
    assert len(tries) == 1

    def broken():
        tries.append(1)
        raise duckdb.IOException("No space left on device")
    tries.clear()
    try:
        warehouse.retry_races(broken, conn)
    except duckdb.IOException:
        pass
    assert len(tries) == 1


def test_a_lakes_errors_and_ddl_keep_no_secret_and_no_constraint():
    from flywheel_assets import warehouse
    from flywheel_assets.monitor.alerts import ALERTS_DDL, _lake_ddl

    text = ('Failed to attach DuckLake MetaData "postgres:dbname=lake host=db password=hunter2 '
            'user=u" Unable to connect; SECRET \'abc\' at postgresql+psycopg2://u:pw@db:5432/d')
    scrubbed = warehouse.scrub(text)
    assert "hunter2" not in scrubbed and "abc" not in scrubbed and ":pw@" not in scrubbed
    assert 'password=*** user=u"' in scrubbed and "dbname=lake" in scrubbed
    ddl = _lake_ddl(ALERTS_DDL)
    assert "PRIMARY KEY" not in ddl and "CHECK" not in ddl and "NOT NULL" in ddl
    assert ddl.count("(") == ddl.count(")") and "claimed_by VARCHAR" in ddl
