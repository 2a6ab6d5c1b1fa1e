"""The label stage's pure parts: the budget, the outbox's escaping, the inbox parser and
import (quarantine, never a crash), label resolution, the gold guard, noisy annotators."""

import csv
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from flywheel_assets import warehouse
from flywheel_assets.evaluate import promotion
from flywheel_assets.label import inbox, labels, outbox, selection
from flywheel_assets.settings import GateSettings
from flywheel_assets.simulation import annotators

DAY = "2026-01-03"


def test_the_control_slice_cannot_fall_below_ten_percent():
    with pytest.raises(ValueError, match="control_share"):
        selection.Budget(100, control_share=0.05)
    assert selection.Budget(101, control_share=0.1).control == 11


@pytest.mark.parametrize("value", ["=HYPERLINK(\"http://x\")", "+1+1", "-2", "@SUM(A1)",
                                   "  =1+1", "\t=1"])
def test_formula_cells_are_escaped(value):
    assert outbox.escape_cell(value).startswith("'")


def test_plain_cells_are_kept():
    assert outbox.escape_cell("cat_01") == "cat_01" and outbox.escape_cell(3) == "3"


class _CountingRidge(Ridge):
    """A ridge model that records how many rows each fit saw."""
    seen: list[int] = []

    def fit(self, X, y, sample_weight=None):
        _CountingRidge.seen.append(len(X))
        return super().fit(X, y, sample_weight)


def test_expected_model_change_bootstraps_are_as_large_as_its_rows():
    # scikit-activeml 1.0.1 with its default n_train drew len(X)**2 / 2 rows per
    # bootstrap; ours draws len(X) + 1 (with replacement), each fit on its labelled rows.
    from skactiveml.regressor import SklearnRegressor
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    grades = rng.integers(0, 4, 200).astype(float)
    grades[150:] = np.nan
    _CountingRidge.seen = []
    chosen = selection.model_change(0).query(
        X, grades, SklearnRegressor(_CountingRidge(), missing_label=np.nan, random_state=0),
        candidates=np.arange(150, 200), batch_size=5)
    bootstraps = _CountingRidge.seen[1:]   # the first fit is the model on all labels
    assert _CountingRidge.seen[0] == 150 and len(bootstraps) == 3
    # Of len(X) + 1 = 201 draws, about 150 / 200 are labelled rows.
    assert all(100 <= n <= 201 for n in bootstraps), bootstraps
    assert len(set(chosen)) == 5 and set(chosen) <= set(range(150, 200))


def _queue(n=4, **overrides):
    rows = pd.DataFrame({
        "task_key": [f"{DAY}/i{k}" for k in range(n)], "impression_id": [f"i{k}" for k in range(n)],
        "request_id": [f"r{k}" for k in range(n)], "user_key": [f"u_{k:04x}" for k in range(n)],
        "item_id": [f"item_{k}" for k in range(n)], "position": range(1, n + 1),
        "category": "cat_01", "country": "DE", "age_band": "18-24", "device": "tv",
        "reason": "random", "priority": range(1, n + 1), "champion_score": [0.2, 1.4, 2.6, 3.1][:n]})
    return rows.assign(**overrides)


def test_a_hostile_queue_writes_a_csv_no_spreadsheet_runs(tmp_path):
    queue = _queue(category=["=cmd|' /C calc'!A0", "+1", "@x", "-1"], item_id=["=1", "a", "b", "c"])
    folder = outbox.write_outbox(tmp_path, DAY, queue, "m1")
    rows = list(csv.reader((folder / "tasks.csv").read_text().splitlines()))
    header, body = rows[0], rows[1:]
    assert len(body) == 4
    for row in body:
        assert not any(cell[:1] in outbox.FORMULA_PREFIXES for cell in row)
    assert body[0][header.index("category")] == "'=cmd|' /C calc'!A0"
    tasks = json.loads((folder / "tasks.json").read_text())
    assert [t["data"]["category"] for t in tasks][0] == "=cmd|' /C calc'!A0"  # JSON is data
    assert not list(tmp_path.glob(".*"))  # nothing half-written left behind


def test_the_champions_guess_rides_along_as_a_prediction(tmp_path):
    tasks = json.loads((outbox.write_outbox(tmp_path, DAY, _queue(), "m1") / "tasks.json").read_text())
    guesses = [t["predictions"][0]["result"][0]["value"]["choices"][0] for t in tasks]
    assert guesses == ["0", "1", "3", "3"]
    scores = [t["predictions"][0]["score"] for t in tasks]
    assert scores[0] == pytest.approx(0.6) and scores[3] == pytest.approx(0.8)
    assert all(t["predictions"][0]["model_version"] == "m1" for t in tasks)
    assert set(tasks[0]["data"]) == set(outbox.TASK_FIELDS)


MALFORMED = {
    "truncated.json": '[{"data": {"task_key": "x"}, "annotations": [',
    "object.json": '{"unexpected": true}',
    "garbage.bin": "\x00\x01\x02 not a label file",
    "words.csv": "a,b\n1,2\n",
    "no_data.json": '[{"annotations": []}]',
    "bad_annotation.json": '[{"data": {"task_key": "k"}, "annotations": [3, {"result": []}]}]',
    "bad_grade.csv": "task_key,relevance,annotator\nk,seven,1\nk,9,2\n,2,3\n",
    "empty.json": "",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_inbox_files_are_quarantined_never_raised(name):
    parsed = inbox.parse_text(MALFORMED[name], name)
    assert parsed.rows_read >= 1 and not parsed.annotations
    assert all(q["reason"] and q["source_file"] == name for q in parsed.quarantined)


def test_random_bytes_never_crash_the_parser():
    rng = np.random.default_rng(0)
    for _ in range(200):
        text = bytes(rng.integers(0, 256, rng.integers(0, 200))).decode("latin-1")
        parsed = inbox.parse_text(rng.choice(["[", "{", ""]) + text, "fuzz")
        assert parsed.rows_read == len(parsed.annotations) + len(parsed.quarantined)


def _export(task_key, *annotations):
    return {"id": 1, "data": {"task_key": task_key}, "annotations": [
        {"id": n, "completed_by": who, "was_cancelled": grade is None,
         "result": [] if grade is None else [{"from_name": "relevance", "to_name": "text",
                                               "type": "choices", "value": {"choices": [str(grade)]}}]}
        for n, (who, grade) in enumerate(annotations)]}


def _queue_in(conn):
    queue = _queue().assign(partition_date=pd.Timestamp("2026-01-02").date())
    queue["task_key"] = [f"2026-01-02/i{k}" for k in range(4)]
    conn.register("_q", queue)
    conn.execute("INSERT INTO label.labeling_queue BY NAME SELECT * FROM _q")
    conn.unregister("_q")


def test_the_inbox_import_quarantines_row_by_row_and_counts_every_row(tmp_path):
    with warehouse.connect(tmp_path / "w.duckdb") as conn:
        _queue_in(conn)
        _import_everything(conn, tmp_path)


def _import_everything(conn, tmp_path):
    box = tmp_path / "inbox"
    box.mkdir()
    (box / "a.json").write_text(json.dumps([
        _export("2026-01-02/i0", (1, 2), (2, 3)), _export("2026-01-02/i1", (1, 0), (2, None)),
        _export("2099-01-01/nope", (1, 1))]))
    (box / "b_min.json").write_text(json.dumps([
        {"task_key": "2026-01-02/i0", "relevance": "2", "annotator": 1},   # duplicate of a.json
        {"task_key": "2026-01-02/i2", "relevance": "1", "annotator": 3}]))
    (box / "c.csv").write_text("task_key,relevance,annotator\n2026-01-02/i3,=2,4\n2026-01-02/i3,2,4\n")
    (box / "d.json").write_text("[{broken")
    day = labels.import_inbox(conn, box, DAY)
    files = conn.execute("SELECT source_file, rows_read, accepted, quarantined FROM "
                         "label.inbox_files ORDER BY 1").fetchall()
    assert files == [("a.json", 5, 3, 2), ("b_min.json", 2, 1, 1), ("c.csv", 2, 1, 1),
                     ("d.json", 1, 0, 1)]
    reasons = " | ".join(r[0] for r in conn.execute(
        "SELECT reason FROM label.quarantined_labels ORDER BY source_file, source_row").fetchall())
    for expected in ("cancelled", "unknown task", "duplicate", "not a grade", "not valid JSON"):
        assert expected in reasons
    assert day["rows_read"] == day["accepted"] + day["quarantined"] == 10
    resolved = dict(conn.execute("SELECT task_key, grade FROM label.human_labels").fetchall())
    assert resolved == {"2026-01-02/i0": 2, "2026-01-02/i1": 0, "2026-01-02/i2": 1,
                        "2026-01-02/i3": 2}
    # Re-running the day gives the same tables; the next day reads nothing again.
    again = labels.import_inbox(conn, box, DAY)
    assert (again["accepted"], again["quarantined"]) == (day["accepted"], day["quarantined"])
    assert conn.execute("SELECT count(*) FROM label.annotations").fetchone()[0] == 5
    later = labels.import_inbox(conn, box, "2026-01-04")
    assert later["files"] == 0 and later["rows_read"] == 0


def test_resolution_takes_the_most_common_grade_and_ties_go_to_the_median():
    assert inbox.resolve([2, 2, 3]) == 2
    assert inbox.resolve([0, 3]) == 0 and inbox.resolve([1, 2, 2, 1, 3]) == 2


def test_agreement_is_krippendorffs_alpha_over_shared_tasks():
    frame = pd.DataFrame({"task_key": ["a", "a", "b", "b", "c"], "annotator": ["1", "2"] * 2 + ["1"],
                          "grade": [3, 3, 0, 0, 1]})
    assert inbox.agreement(frame) == pytest.approx(1.0)
    disagree = frame.assign(grade=[3, 0, 0, 3, 1])
    assert inbox.agreement(disagree) < 0
    assert inbox.agreement(frame[frame["task_key"] == "c"]) is None


def test_the_gold_guard_holds_a_candidate_that_ranks_people_worse():
    policy = GateSettings(min_gold_examples=50, gold_tolerance=0.03)
    record = {"gold": {"version": "gold-x", "examples": 80, "candidate": 0.70, "champion": 0.80,
                       "candidate_vs_champion": {"difference": -0.1, "ci_low": -0.16, "ci_high": -0.04}}}
    [guard] = promotion.guards(record, policy)
    assert guard["guard"] == "gold_set auc" and not guard["ok"]
    fine = {"gold": {**record["gold"], "candidate_vs_champion": {"difference": 0.0, "ci_low": -0.02,
                                                                   "ci_high": 0.02}}}
    assert promotion.guards(fine, policy)[0]["ok"]
    small = {"gold": {**record["gold"], "examples": 20}}
    assert promotion.guards(small, policy) == []


def test_noisy_annotators_err_at_the_configured_rate():
    rng = np.random.default_rng(0)
    grades = rng.integers(0, 4, 20000)
    given = annotators.noisy(grades, 0.2, rng)
    assert abs((given != grades).mean() - 0.2) < 0.01
    assert set(np.unique(given)) == {0, 1, 2, 3}


def test_erasure_reaches_the_label_tables(tmp_path):
    from flywheel_assets.ingest import erasure

    with warehouse.connect(tmp_path / "w.duckdb") as conn:
        conn.execute("INSERT INTO raw.deletion_requests (user_key) VALUES ('u_gone')")
        conn.execute("INSERT INTO label.labeling_queue (task_key, user_key, impression_id) "
                     "VALUES ('t1', 'u_gone', 'i1'), ('t2', 'u_kept', 'i2')")
        for table in ("label.annotations", "label.human_labels"):
            conn.execute(f"INSERT INTO {table} (task_key, grade) VALUES ('t1', 1), ('t2', 2)")
        conn.execute("INSERT INTO label.gold_set (task_key, user_key) VALUES ('t1', 'u_gone')")
        conn.execute("""INSERT INTO label.quarantined_labels (task_key, record) VALUES
                        ('nope', '{"data": {"user_key": "u_gone"}}'), ('t2', '{}')""")
        erasure.erase_deleted_users(conn)
        for table in ("label.labeling_queue", "label.annotations", "label.human_labels",
                      "label.quarantined_labels"):
            assert conn.execute(f"SELECT list(task_key) FROM {table}").fetchone()[0] == ["t2"], table
        assert conn.execute("SELECT count(*) FROM label.gold_set").fetchone()[0] == 0


def test_a_day_imported_before_keeps_its_files_and_new_ones_go_to_the_next_day(tmp_path):
    with warehouse.connect(tmp_path / "w.duckdb") as conn:
        _queue_in(conn)
        box = tmp_path / "inbox"
        box.mkdir()
        (box / "first.json").write_text(json.dumps([_export("2026-01-02/i0", (1, 2))]))
        first = labels.import_inbox(conn, box, DAY)
        (box / "later.json").write_text(json.dumps([_export("2026-01-02/i1", (1, 3)),
                                                    _export("2026-01-02/i0", (1, 2))]))
        again = labels.import_inbox(conn, box, DAY)
        assert (again["files"], again["accepted"]) == (first["files"], first["accepted"]) == (1, 1)
        nxt = labels.import_inbox(conn, box, "2026-01-04")
        assert (nxt["files"], nxt["accepted"], nxt["quarantined"]) == (1, 1, 1)  # i0 again: duplicate
        # A backfill of an earlier day does not accept again what a later day imported.
        back = labels.import_inbox(conn, box, "2026-01-02")
        assert back["files"] == 0


def test_absurd_inbox_content_is_quarantined_not_raised():
    deep = "[" * 100000 + "]" * 100000
    assert inbox.parse_text(deep, "deep.json").quarantined[0]["reason"].startswith(("unreadable", "not valid"))
    huge = json.dumps([{"task_key": "k", "relevance": "9" * 5000, "annotator": 1}])
    parsed = inbox.parse_text(huge, "huge.json")
    assert not parsed.annotations and "not a grade" in parsed.quarantined[0]["reason"]
    blank = inbox.parse_text("task_key,relevance,annotator\nk,,1\n", "blank.csv")
    assert blank.quarantined[0]["reason"].startswith("unanswered")


def test_grades_map_between_people_and_a_click_only_product():
    assert selection.signal_boundary(2, 3) == 1.5 and selection.signal_boundary(2, 1) == 0.5
    tasks = outbox.import_tasks(_queue(champion_score=[0.1, 0.4, 0.6, 0.9]), "m1", max_grade=1)
    assert [t["predictions"][0]["result"][0]["value"]["choices"][0] for t in tasks] == \
        ["0", "0", "3", "3"]


def test_gold_comparisons_rest_on_the_random_slice_no_compared_model_learnt_from():
    from flywheel_assets.label import gold

    frame = pd.DataFrame({"reason": ["random", "random", "contradicted", "random"],
                          "task_key": ["a", "b", "c", "d"]})
    assert gold.judged(frame, {"b"}).tolist() == [True, False, False, True]
