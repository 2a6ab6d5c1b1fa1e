"""The holdout sample is read for the sampled requests only, and is the hash sample of
the whole holdout."""

import duckdb
import pandas as pd

from flywheel_assets import warehouse
from flywheel_assets.evaluate.evaluation import bounded_holdout, sampled_requests
from flywheel_assets.train import training_set as ts_lib

DAY = "2026-01-03"


def test_the_bounded_holdout_is_the_hash_sample_of_the_whole_holdout():
    conn = duckdb.connect()
    warehouse.create_schema(conn)
    conn.execute("""
        INSERT INTO ml.training_set (partition_date, split, request_id, position, impression_id)
        SELECT DATE '2026-01-03', CASE WHEN i % 7 = 0 THEN 'train' ELSE 'holdout' END,
               'r' || (i // 10), i % 10 + 1, 'imp' || i
        FROM range(5000) t(i)""")
    whole = ts_lib.read_split(conn, DAY, "holdout")
    keep = sampled_requests(whole["request_id"], 40)
    expected = whole[whole["request_id"].isin(keep)].reset_index(drop=True)
    got = bounded_holdout(conn, DAY, 40)
    assert got["request_id"].nunique() == 40
    pd.testing.assert_frame_equal(got, expected)
    # Few enough requests: the whole holdout.
    pd.testing.assert_frame_equal(bounded_holdout(conn, DAY, 10_000), whole)
