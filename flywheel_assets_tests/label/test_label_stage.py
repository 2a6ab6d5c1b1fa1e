"""The label stage on a small simulated world, on a real DuckDB file and Dagster: the
queue goes out, the world's annotators answer through the inbox, gold is cut and never
trained on, and the gate refuses a day whose training set holds a gold example."""

import csv
import json

import dagster as dg
import pandas as pd
import pytest

from flywheel_assets import warehouse
from flywheel_assets.evaluate import promotion
from flywheel_assets.label import selection
from flywheel_assets.label.outbox import FORMULA_PREFIXES
from flywheel_assets.settings import Settings
from flywheel_assets.simulation import annotators, world
from flywheel_assets.simulation.config import WorldConfig
from flywheel_assets.train import checks as train_checks
from flywheel_assets_tests.helpers import land_day, rotate

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
CONFIG = WorldConfig(n_users=400, n_items=300, requests_per_day=1500, pool_size=20,
                     annotator_noise=0.1)
BUDGET = 120


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("labels")
    instance = dg.DagsterInstance.ephemeral()
    overrides = {"labeling.budget": BUDGET, "labeling.min_labels": 20}
    answered = []
    for day in DAYS:
        land_day(data_dir, CONFIG, day)
        answered.append(annotators.answer(data_dir, world.world_dir(data_dir), CONFIG, day))
        rotate(data_dir, day, instance, overrides)
    return data_dir, instance, overrides, answered


def _sql(data_dir, query, params=None):
    with warehouse.connect(Settings.from_env(data_dir).warehouse_path) as conn:
        return conn.execute(query, params or []).df()


def test_the_queue_spends_its_budget_with_a_random_control_slice(labelled):
    data_dir, *_ = labelled
    queue = _sql(data_dir, "SELECT * FROM label.labeling_queue")
    erased = set(_sql(data_dir, "SELECT user_key FROM raw.deletion_requests")["user_key"])
    for day, rows in queue.groupby("partition_date"):
        # The outbox holds the whole queue; the table loses the tasks of users who asked
        # for erasure since.
        tasks = json.loads((data_dir / "labeling" / "outbox" / str(day.date()) /
                            "tasks.json").read_text())
        assert len(tasks) == BUDGET
        gone = sum(t["data"]["user_key"] in erased for t in tasks)
        assert len(rows) == BUDGET - gone, day
        assert (rows["reason"] == "random").sum() >= 0.1 * BUDGET
        assert rows["priority"].tolist() == sorted(rows["priority"])
    # Once people labelled enough, the active strategies choose; before, the champion's
    # margin does.
    last = queue[queue["partition_date"] == pd.Timestamp(DAYS[-1])]
    assert {"uncertainty", "committee", "model_change"} <= set(last["reason"])
    first = queue[queue["partition_date"] == pd.Timestamp(DAYS[0])]
    assert not {"uncertainty", "committee", "model_change"} & set(first["reason"])


def test_contradicted_cases_are_what_the_champion_ranked_first_and_people_rejected(labelled):
    data_dir, *_ = labelled
    rows = _sql(data_dir, "SELECT * FROM label.labeling_queue WHERE reason = 'contradicted'")
    assert len(rows)
    assert (rows["champion_rank"] == 1).all()
    assert rows["signals"].apply(lambda s: "thumbs_down" in s or list(s) == ["skip"]).all()


def test_the_outbox_holds_no_raw_user_id_and_no_formula_cell(labelled):
    data_dir, *_ = labelled
    raw_ids = set()
    for day in DAYS:
        folder = data_dir / "landing" / "impressions" / f"date={day}"
        for path in folder.glob("*.csv"):
            raw_ids |= set(pd.read_csv(path, usecols=["user_id"])["user_id"].dropna().astype(str))
        for path in folder.glob("*.parquet"):
            raw_ids |= set(pd.read_parquet(path, columns=["user_id"])["user_id"].dropna().astype(str))
    assert raw_ids
    for day in DAYS:
        out = data_dir / "labeling" / "outbox" / day
        tasks = json.loads((out / "tasks.json").read_text())
        assert len(tasks) == BUDGET
        keys = {t["data"]["user_key"] for t in tasks}
        assert keys and not keys & raw_ids and all(k.startswith("u_") for k in keys)
        text = (out / "tasks.json").read_text() + (out / "tasks.csv").read_text()
        assert not any(f'"{raw}"' in text or f",{raw}," in text for raw in raw_ids)
        for row in csv.reader((out / "tasks.csv").read_text().splitlines()[1:]):
            assert not any(cell[:1] in FORMULA_PREFIXES for cell in row)
        champion = _sql(data_dir, "SELECT any_value(champion_version) AS v FROM "
                                  "label.labeling_queue WHERE partition_date = ?", [day])["v"].iloc[0]
        if champion:
            assert all(t["predictions"][0]["model_version"] == champion and
                       0 <= t["predictions"][0]["score"] <= 1 for t in tasks)
        else:  # no model of ours served yet: no guess to show
            assert not any("predictions" in t for t in tasks)


def test_annotators_answers_come_back_counted_resolved_and_agreed(labelled):
    data_dir, _, _, answered = labelled
    assert answered[0]["answered"] == 0  # nothing queued before day 1
    files = _sql(data_dir, "SELECT * FROM label.inbox_files ORDER BY partition_date")
    assert len(files) == len(DAYS) - 1
    assert (files["rows_read"] == files["accepted"] + files["quarantined"]).all()
    for a, row in zip(answered[1:], files.itertuples()):
        assert row.rows_read == a["answered"]
    labels = _sql(data_dir, "SELECT * FROM label.human_labels")
    queue = _sql(data_dir, "SELECT task_key FROM label.labeling_queue")
    # Every label belongs to a queued task (erasure takes both away together).
    assert len(labels) and set(labels["task_key"]) <= set(queue["task_key"])
    annotations = _sql(data_dir, "SELECT * FROM label.annotations")
    assert annotations.groupby("task_key")["annotator"].nunique().max() == 2
    quarantined = _sql(data_dir, "SELECT reason FROM label.quarantined_labels")
    assert quarantined["reason"].str.startswith(("cancelled", "unknown task")).all()
    assert quarantined["reason"].str.startswith("cancelled").any()


def test_gold_is_cut_from_control_and_contradicted_labels_and_never_trained_on(labelled):
    data_dir, *_ = labelled
    gold = _sql(data_dir, "SELECT * FROM label.gold_set")
    assert len(gold) and set(gold["reason"]) <= set(selection.GOLD_REASONS)
    newest = gold[gold["version"] == gold["version"].max()]
    # Failures first.
    assert newest.sort_values("rank")["failure"].tolist() == sorted(newest["failure"], reverse=True)
    overlap = _sql(data_dir, """
        SELECT count(*) AS n FROM ml.training_set t JOIN label.gold_set g
          ON g.item_id = t.item_id AND (g.request_id = t.request_id OR g.user_key = t.user_key)
         AND g.partition_date <= t.partition_date""")
    assert overlap["n"].iloc[0] == 0
    # Earlier days' control and contradicted picks (gold to be) are left out too.
    pending = _sql(data_dir, """
        SELECT count(*) AS n FROM ml.training_set t JOIN label.labeling_queue q
          ON q.item_id = t.item_id AND q.request_id = t.request_id
         AND q.partition_date < t.partition_date AND q.reason IN ('random', 'contradicted')""")
    assert pending["n"].iloc[0] == 0
    checks = _sql(data_dir, "SELECT passed FROM monitor.check_results WHERE check_name = "
                            "'training_set_has_no_gold'")
    assert len(checks) == len(DAYS) and checks["passed"].all()


def test_labelled_active_picks_teach_the_model_their_human_grade(labelled):
    data_dir, *_ = labelled
    rows = _sql(data_dir, f"""
        SELECT t.label_grade, t.human_grade, t.weight FROM ml.training_set t
        WHERE t.partition_date = DATE '{DAYS[-1]}' AND t.human_grade IS NOT NULL""")
    assert len(rows)
    assert (rows["label_grade"] == rows["human_grade"]).all() and (rows["weight"] == 1.0).all()


def test_evaluation_reports_gold_metrics_on_the_judged_slice(labelled):
    data_dir, *_ = labelled
    metrics = json.loads(_sql(data_dir, "SELECT metrics FROM ml.model_evaluations WHERE "
                                        f"partition_date = DATE '{DAYS[-1]}'")["metrics"].iloc[0])
    gold = metrics["gold"]
    assert gold["examples"] > 0 and 0.0 <= gold["candidate"] <= 1.0
    # Judged: the random slice only (the guard's own rule is tested in test_label_units).
    random_slice = _sql(data_dir, "SELECT count(*) AS n FROM label.gold_set WHERE version = ? "
                                  "AND reason = 'random'", [gold["version"]])["n"].iloc[0]
    assert 0 < gold["judged"] <= random_slice < gold["examples"]


def test_a_gold_example_in_the_training_set_fails_the_blocking_check_and_the_gate(labelled):
    data_dir, *_ = labelled
    day = DAYS[-1]
    [spec] = train_checks.training_set_has_no_gold.check_specs
    assert spec.blocking  # a failure stops the rotation before training
    s = Settings.from_env(data_dir)
    with warehouse.connect(s.warehouse_path) as conn:
        assert train_checks.no_gold(conn, day)[0]
        row = conn.execute("SELECT request_id, user_key, item_id FROM ml.training_set WHERE "
                           "partition_date = ? AND split = 'train' LIMIT 1", [day]).fetchone()
        conn.execute("""INSERT INTO label.gold_set (partition_date, version, rank, task_key,
                        reason, failure, grade, request_id, user_key, item_id)
                        VALUES (?, 'gold-planted', 1, 'planted', 'random', false, 3, ?, ?, ?)""",
                     [day, *row])
        try:
            passed, description, metadata = train_checks.no_gold(conn, day)
            assert not passed and metadata["leaked_rows"] >= 1 and "planted" in description
            warehouse.record_check(conn, day, "training_set", "training_set_has_no_gold",
                                   passed, description)
            problems = warehouse.failed_or_missing_checks(conn, day, promotion.DATA_CHECKS)
            assert any("training_set_has_no_gold" in p for p in problems)
        finally:
            conn.execute("DELETE FROM label.gold_set WHERE version = 'gold-planted'")
            warehouse.record_check(conn, day, "training_set", "training_set_has_no_gold", True, None)


def test_a_retrain_that_learns_from_the_day_never_trains_on_its_gold_bound_picks(labelled):
    from flywheel_assets.definitions import build_definitions

    data_dir, instance, overrides, _ = labelled
    day = DAYS[-1]
    job = build_definitions(str(data_dir), overrides).resolve_job_def("daily_rotation_job")
    result = job.execute_in_process(
        partition_key=day, instance=instance, asset_selection=[dg.AssetKey("training_set")],
        run_config={"ops": {"training_set": {"config": {"holdout_share": 0.5}}}})
    assert result.success
    overlap = _sql(data_dir, f"""
        SELECT count(*) FILTER (WHERE t.split = 'train') AS train,
               count(*) FILTER (WHERE t.split = 'holdout') AS holdout
        FROM ml.training_set t JOIN label.labeling_queue q
          ON q.item_id = t.item_id AND q.request_id = t.request_id
        WHERE t.partition_date = DATE '{day}' AND q.partition_date = DATE '{day}'
          AND q.reason IN ('random', 'contradicted')""")
    assert overlap["train"].iloc[0] == 0
    # The day's own picks stay in the holdout they were chosen from (when in its half).
    assert overlap["holdout"].iloc[0] > 0


def test_a_queue_once_issued_is_kept_on_a_rerun(labelled):
    data_dir, instance, overrides, _ = labelled
    day = DAYS[1]
    before = _sql(data_dir, "SELECT task_key, reason FROM label.labeling_queue WHERE "
                            f"partition_date = DATE '{day}' ORDER BY task_key")
    rotate(data_dir, day, instance, overrides, selection=["labeling_queue"])
    after = _sql(data_dir, "SELECT task_key, reason FROM label.labeling_queue WHERE "
                           f"partition_date = DATE '{day}' ORDER BY task_key")
    assert len(before) and before.equals(after)
