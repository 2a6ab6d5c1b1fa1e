"""The drift verdict finds real shifts and only those, on a real DuckDB file; the
Evidently report is written atomically and agrees with the verdict on a clear case."""

import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from flywheel_assets.monitor import drift

N = 20_000
DEVICES = np.array(["ios", "android", "web"])
COLUMNS = [drift.ColumnSpec("x", "numeric"), drift.ColumnSpec("y", "numeric"),
           drift.ColumnSpec("device", "categorical"), drift.ColumnSpec("country", "categorical")]


def _frame(seed: int, n: int = N, x_shift: float = 0.0,
           device_p: tuple = (0.5, 0.3, 0.2)) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "x": rng.normal(x_shift, 1.0, n),
        "y": rng.lognormal(1.0, 0.5, n),
        "device": rng.choice(DEVICES, n, p=device_p),
        "country": rng.choice(np.array(["fr", "de", "it", "es"]), n),
    })


@pytest.fixture
def conn(tmp_path: Path):
    """A DuckDB file holding a reference table and a few kinds of current tables."""
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    frames = {
        "ref": _frame(1),
        "same": _frame(2),
        "shifted": _frame(3, x_shift=1.0),
        "mix": _frame(4, device_p=(0.2, 0.3, 0.5)),
    }
    new_cat = _frame(5)
    new_cat.loc[new_cat.index[: N // 5], "device"] = "tv"  # 20% in a category never seen
    frames["new_cat"] = new_cat
    nulls = _frame(6)
    nulls.loc[nulls.index[: int(N * 0.3)], ["x", "device"]] = None
    frames["nulls"] = nulls
    for name, frame in frames.items():
        con.register("_frame", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM _frame")
        con.unregister("_frame")
    yield con
    con.close()


def _by_column(conn, current: str, columns=COLUMNS) -> dict[str, drift.ColumnDrift]:
    drifts = drift.column_drift(conn, "SELECT * FROM ref", f"SELECT * FROM {current}", columns)
    return {d.column: d for d in drifts}


def _js(conn, table: str, column: str) -> float:
    """Reference JS distance (base 2, NULL a category) computed independently by scipy."""
    ref = conn.execute(f"SELECT {column} FROM ref").df()[column].astype(object).fillna("<null>")
    cur = conn.execute(f"SELECT {column} FROM {table}").df()[column].astype(object).fillna("<null>")
    keys = sorted(set(ref) | set(cur))
    return float(jensenshannon(ref.value_counts().reindex(keys, fill_value=0),
                               cur.value_counts().reindex(keys, fill_value=0), base=2))


def test_same_distribution_drifts_nowhere(conn):
    result = _by_column(conn, "same")
    assert not any(d.drifted for d in result.values()), result
    assert all(d.value < 0.05 for d in result.values()), result
    assert result["x"].reference_rows == result["x"].current_rows == N
    verdict = drift.drift_verdict(list(result.values()))
    assert verdict.drift_share == 0.0 and not verdict.dataset_drift


def test_mean_shift_of_one_std_drifts_that_column_only(conn):
    result = _by_column(conn, "shifted")
    assert result["x"].drifted and result["x"].statistic == "wasserstein_norm"
    # A pure shift of 1 std is a normalised W1 of ~1, ten times the threshold.
    assert result["x"].value > 0.8 > result["x"].threshold
    assert not result["y"].drifted and result["y"].value < result["y"].threshold
    assert not result["device"].drifted


def test_quantile_wasserstein_matches_the_exact_one(conn):
    ref = conn.execute("SELECT y FROM ref").df()["y"]
    cur = conn.execute("SELECT y * 1.3 AS y FROM same").df()["y"]
    exact = stats.wasserstein_distance(ref, cur) / np.std(ref)
    got = drift.column_drift(conn, "SELECT y FROM ref", "SELECT y * 1.3 AS y FROM same",
                             [drift.ColumnSpec("y", "numeric")])[0].value
    assert got == pytest.approx(exact, rel=0.03)


def test_changed_category_mix_drifts(conn):
    result = _by_column(conn, "mix")
    assert result["device"].drifted and result["device"].statistic == "jensen_shannon"
    assert result["device"].value == pytest.approx(_js(conn, "mix", "device"), abs=1e-9)
    assert not result["country"].drifted and not result["x"].drifted


def test_category_seen_only_in_current(conn):
    result = _by_column(conn, "new_cat")
    value = result["device"].value
    assert np.isfinite(value) and 0 < value <= 1 and result["device"].drifted
    assert value == pytest.approx(_js(conn, "new_cat", "device"), abs=1e-9)


def test_nulls_are_ignored_for_numbers_and_a_category_for_categories(conn):
    result = _by_column(conn, "nulls")
    assert result["x"].current_null_share == pytest.approx(0.3)
    assert not result["x"].drifted  # the non-NULL values are the same distribution
    assert result["device"].current_null_share == pytest.approx(0.3)
    assert result["device"].drifted  # 30% of a new "NULL" category is a changed mix
    assert result["device"].value == pytest.approx(_js(conn, "nulls", "device"), abs=1e-9)
    assert result["y"].current_null_share == 0.0


def test_constant_reference_does_not_divide_by_zero(conn):
    spec = [drift.ColumnSpec("c", "numeric")]
    same = drift.column_drift(conn, "SELECT 3.0 AS c FROM ref", "SELECT 3.0 AS c FROM same", spec)
    moved = drift.column_drift(conn, "SELECT 3.0 AS c FROM ref", "SELECT 3.5 AS c FROM same", spec)
    assert same[0].value == 0.0 and not same[0].drifted
    assert np.isfinite(moved[0].value) and moved[0].drifted


def test_all_null_numeric_column(conn):
    spec = [drift.ColumnSpec("v", "numeric")]
    both = drift.column_drift(conn, "SELECT NULL::DOUBLE AS v FROM ref",
                              "SELECT NULL::DOUBLE AS v FROM same", spec)[0]
    one = drift.column_drift(conn, "SELECT x AS v FROM ref",
                             "SELECT NULL::DOUBLE AS v FROM same", spec)[0]
    assert both.value == 0.0 and not both.drifted
    assert one.value == np.inf and one.drifted and one.current_null_share == 1.0


@pytest.mark.parametrize("side", ["reference", "current"])
def test_empty_side_raises_naming_it(conn, side):
    empty = "SELECT * FROM ref WHERE x > 1e9"
    ref_sql, cur_sql = (empty, "SELECT * FROM same") if side == "reference" else (
        "SELECT * FROM ref", empty)
    with pytest.raises(ValueError, match=f"the {side} side is empty") as info:
        drift.column_drift(conn, ref_sql, cur_sql, COLUMNS)
    assert "x > 1e9" in str(info.value)


def test_verdict_share_top_and_json(conn):
    verdict = drift.drift_verdict(
        drift.column_drift(conn, "SELECT * FROM ref", "SELECT * FROM shifted", COLUMNS)
        + drift.column_drift(conn, "SELECT * FROM ref", "SELECT * FROM mix", COLUMNS[2:3]))
    assert verdict.drift_share == pytest.approx(2 / 5)
    assert not verdict.dataset_drift
    assert drift.drift_verdict(list(verdict.drifts),
                               drift.DriftThresholds(drift_share=0.4)).dataset_drift
    assert [d.column for d in verdict.top(2)] == ["x", "device"]
    payload = json.loads(json.dumps(verdict.as_dict()))
    assert payload["n_drifted"] == 2 and payload["columns"][0]["column"] == "x"


def test_sample_is_bounded_and_reproducible(conn):
    sql = "SELECT row_number() OVER () AS id, * FROM ref"
    first = drift.sample_frame(conn, sql, max_rows=1000, seed=7)
    again = drift.sample_frame(conn, sql, max_rows=1000, seed=7)
    other = drift.sample_frame(conn, sql, max_rows=1000, seed=8)
    assert len(first) == 1000
    assert sorted(first["id"]) == sorted(again["id"])
    assert sorted(first["id"]) != sorted(other["id"])
    assert len(drift.sample_frame(conn, "SELECT * FROM ref LIMIT 10", max_rows=1000)) == 10


def test_evidently_report_is_written_atomically_and_agrees(conn, tmp_path):
    reference = drift.sample_frame(conn, "SELECT * FROM ref", max_rows=5000)
    current = drift.sample_frame(conn, "SELECT * FROM shifted", max_rows=5000)
    # Shift x and change the device mix on the sample: two of four columns drift.
    current["device"] = np.random.default_rng(0).choice(DEVICES, len(current), p=(0.2, 0.3, 0.5))
    current.loc[current.index[:100], "y"] = None  # NaN must not trip Evidently
    out = tmp_path / "reports" / "drift.html"
    result = drift.evidently_report(reference, current, COLUMNS, out)
    html = out.read_text()
    assert len(html) > 10_000 and "<html" in html.lower()
    assert [p.name for p in out.parent.iterdir()] == ["drift.html"]  # no temp file left
    assert result["path"] == str(out) and result["current_rows"] == 5000
    assert result["evidently_drifted_columns"] == 2
    assert result["evidently_drift_share"] == pytest.approx(0.5)


def test_calibration_reads_each_day_once_and_finds_the_same_noise_as_leave_one_out(tmp_path):
    """Calibration reads the reference days once into a table with their day and holds
    each day out of it; on an unsampled view that is exactly the statistic of the day
    against the other days, each read on its own (one day is shifted: it sets the max)."""
    from flywheel_assets.monitor.drift_report import calibrate

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    days = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    frames = [_frame(10 + i, n=3000, x_shift=0.6 if i == 2 else 0.0).assign(day=pd.Timestamp(d))
              for i, d in enumerate(days)]
    con.register("_rows", pd.concat(frames))
    con.execute("CREATE TABLE events AS SELECT x, y, device, country, day::DATE AS day FROM _rows")

    def sql_of(ds, day_column=False):
        return (f"SELECT x, y, device, country{', day AS _day' if day_column else ''} "
                f"FROM events WHERE day IN ({', '.join(repr(d) for d in ds)})")

    noise = calibrate(con, [("events", sql_of, COLUMNS, None)], days)
    expected = {}
    for held_out in days:
        for d in drift.column_drift(con, sql_of([x for x in days if x != held_out]),
                                    sql_of([held_out]), COLUMNS):
            expected[d.column] = max(expected.get(d.column, 0.0), d.value)
    assert noise == pytest.approx(expected, rel=1e-12)
    assert noise["x"] > 0.4  # the shifted day, held out, sets x's normal variation
    assert not con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone()[0]


def test_calibration_of_a_sampled_view_compares_samples_of_its_size(tmp_path, monkeypatch):
    """A view sampled to ``sample_rows`` (the candidate pools) is calibrated as it is
    compared: the held-out day's side and the other days' side each hold a sample of
    ``sample_rows`` rows, whatever the days' volumes (one day is ten times the others)."""
    from flywheel_assets.monitor import drift_report

    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    days = ["2026-01-01", "2026-01-02", "2026-01-03"]
    frames = [_frame(20 + i, n=5000 if i == 1 else 500).assign(day=pd.Timestamp(d))
              for i, d in enumerate(days)]
    con.register("_rows", pd.concat(frames))
    con.execute("CREATE TABLE events AS SELECT x, y, device, country, day::DATE AS day FROM _rows")
    sample_rows = 300

    def sql_of(ds, day_column=False):
        return (f"SELECT * FROM (SELECT x, y, device, country{', day AS _day' if day_column else ''} "
                f"FROM events WHERE day IN ({', '.join(repr(d) for d in ds)})) "
                f"USING SAMPLE reservoir({sample_rows} ROWS) REPEATABLE (7)")

    sides = []
    real = drift_report._compare

    def counted(conn, reference_sql, current_sql, *args):
        sides.append([conn.execute(f"SELECT count(*) FROM ({q})").fetchall()[0][0]
                      for q in (reference_sql, current_sql)])
        return real(conn, reference_sql, current_sql, *args)

    monkeypatch.setattr(drift_report, "_compare", counted)
    noise = drift_report.calibrate(con, [("events", sql_of, COLUMNS, sample_rows)], days)
    assert sides == [[sample_rows, sample_rows]] * len(days)
    assert set(noise) == {c.name for c in COLUMNS} and all(np.isfinite(list(noise.values())))
