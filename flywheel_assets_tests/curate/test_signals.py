"""The signal hierarchy: graded labels from outcome flags."""

import duckdb
import pandas as pd

from flywheel_assets.curate.signals import DEFAULT_HIERARCHY, grade_sql


def test_signal_hierarchy_grades():
    flags = ["skip", "partial", "complete", "save", "thumbs_up", "thumbs_down"]
    rows = pd.DataFrame([{f"has_{f}": f == on for f in flags} for on in flags + ["none"]])
    conn = duckdb.connect()
    conn.register("rows", rows)
    got = [r[0] for r in conn.execute(f"SELECT {grade_sql()} FROM rows").fetchall()]
    assert got == [0, 1, 2, 3, 3, 0, 0]
    both = pd.DataFrame([{**{f"has_{f}": False for f in flags}, "has_partial": True, "has_save": True}])
    conn.register("both_flags", both)
    assert conn.execute(f"SELECT {grade_sql()} FROM both_flags").fetchone()[0] == 3
    custom = {**DEFAULT_HIERARCHY, "partial": 2}
    assert conn.execute(f"SELECT {grade_sql(custom)} FROM rows").fetchall()[1][0] == 2
