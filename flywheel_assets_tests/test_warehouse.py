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
