"""A product the flywheel has never seen: landing days with only the required columns
(no user ids, no users or items snapshots, clicks only, a 3-slot carousel) turn full
rotations on a real DuckDB file and Dagster, and nothing is quarantined for a missing
optional field."""

import json
from pathlib import Path

import dagster as dg
import pytest

from flywheel_assets import warehouse
from flywheel_assets.harness.example_logs import SLOTS, write_minimal_day
from flywheel_assets.settings import Settings
from flywheel_assets.train import model_store
from flywheel_assets_tests.helpers import rotate

DAYS = ["2026-03-01", "2026-03-02"]
REQUESTS = 1500


@pytest.fixture(scope="module")
def minimal_product(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("minimal")
    instance = dg.DagsterInstance.ephemeral()
    landed, results = [], []
    for i, day in enumerate(DAYS):
        landed.append(write_minimal_day(data_dir / "landing", day, seed=i, requests=REQUESTS))
        # A click-only product says so; the default vocabulary would accept its clicks too.
        results.append(rotate(data_dir, day, instance, {"signals.grades": "click:1"}))
    return data_dir, landed, results


def _query(data_dir, sql, params=None):
    with warehouse.connect(Path(data_dir) / "warehouse.duckdb") as conn:
        return conn.execute(sql, params or []).fetchall()


def test_every_row_is_accepted_and_nothing_is_quarantined(minimal_product):
    data_dir, landed, results = minimal_product
    assert all(r.success for r in results)
    assert _query(data_dir, "SELECT count(*) FROM raw.quarantined_events") == [(0,)]
    for day, counts in zip(DAYS, landed):
        imp, anonymous = _query(data_dir, "SELECT count(*), count(*) FILTER (WHERE user_key IS NULL) "
                                          "FROM raw.impressions WHERE partition_date = ?", [day])[0]
        assert imp == anonymous == counts["impressions"]
        clicks = _query(data_dir, "SELECT count(*) FROM raw.interactions WHERE partition_date = ?", [day])
        assert clicks == [(counts["clicks"],)]
    # Anonymous traffic is learnt from: consent is not logged, nobody is excluded.
    curated = _query(data_dir, "SELECT count(*), sum(grade) FROM curated.curated_feedback "
                               "WHERE partition_date = ?", [DAYS[1]])[0]
    assert curated == (landed[1]["impressions"], landed[1]["clicks"])


def test_the_model_learns_from_what_the_data_has(minimal_product):
    data_dir, _, results = minimal_product
    settings = Settings.from_env(data_dir)
    versions = [v for (v,) in _query(data_dir, "SELECT version FROM ml.model_registry ORDER BY partition_date")]
    assert len(versions) == 2
    card = model_store.load_card(settings.models_dir, versions[-1])
    # No users or items snapshot: the item id of a small catalogue and the hour of the
    # request are what there is.
    assert card["features"] == {"categorical": ["item_id"], "numeric": ["hour"]}
    assert card["train_rows"] > 0


def test_evaluation_is_at_the_products_slate_size(minimal_product):
    data_dir, _, _ = minimal_product
    record = json.loads(_query(data_dir, "SELECT metrics FROM ml.model_evaluations "
                                         "WHERE partition_date = ?", [DAYS[1]])[0][0])
    assert record["k"] == SLOTS
    assert record["positive_grade"] == 1
    candidate = record["holdout"]["candidate"]
    assert set(candidate) >= {"ndcg_at_k", "auc_positive"}
    # A model that learnt per-item click rates ranks held-out clicks above chance.
    assert candidate["auc_positive"] > 0.55
    # No user or item attributes: no slices to cut, and none invented.
    assert record["slices"] == {}
    decision = _query(data_dir, "SELECT decision FROM ml.gate_decisions WHERE partition_date = ?",
                      [DAYS[1]])
    # No model of ours served yet: the candidate was measured against the incumbent (the
    # policy that produced the logs), never promoted for want of a champion.
    primary = json.loads(decision[0][0])["figures"]["primary"]
    assert "incumbent" in primary["versus"]


def test_policies_are_valued_off_policy_on_the_catalogue(minimal_product, capsys):
    """No pools logged: every request is valued on the 40-item catalogue with the
    per-impression propensities. The logs came from a uniformly random policy, so the
    off-policy IPS value of "uniform" is exactly the logs' own mean reward."""
    from flywheel_assets.cli import main

    data_dir, landed, _ = minimal_product
    assert main(["evaluate", "--day", DAYS[1], "--data-dir", str(data_dir), "--json",
                 "--value", "reward", "--policy", "logging", "--policy", "uniform",
                 "--policy", "candidate"]) == 0
    ope = json.loads(capsys.readouterr().out)
    assert ope["family"] == "item-position" and "catalogue (40 items" in ope["pool_source"]
    logging, uniform = ope["policies"]["logging"], ope["policies"]["uniform"]
    assert uniform["ips"]["value"] == pytest.approx(logging["ips"]["value"])
    assert uniform["effective_sample_size"] == pytest.approx(uniform["valued_impressions"])
    # Reward per request = clicks per request of the requests valued (none trained on).
    assert logging["dr"]["value"] == pytest.approx(landed[1]["clicks"] / REQUESTS, rel=0.15)
    assert set(ope["policies"]) == {"logging", "uniform", "candidate"}
    assert main(["evaluate", "--day", DAYS[1], "--data-dir", str(data_dir)]) == 0
    table = capsys.readouterr().out
    assert "| uniform |" in table and "| popularity |" in table and "trust" in table


def test_drift_is_measured_against_the_days_before(minimal_product):
    """Day 2 is compared with day 1; day 1 has no reference and says so."""
    data_dir, _, _ = minimal_product
    rows = {str(d): (share, ref, json.loads(cols)) for d, share, ref, cols in _query(
        data_dir, "SELECT partition_date, drift_share, reference_partition, columns "
                  "FROM monitor.drift_reports")}
    share, ref, _ = rows[DAYS[1]]
    assert share is not None and str(ref) == DAYS[0]
    share, ref, details = rows[DAYS[0]]
    assert share is None and "no earlier day" in details["not_compared"][0]


def test_the_readme_commands_turn_the_wheel(tmp_path, monkeypatch, capsys):
    """`flywheel example-logs` then `flywheel rotate`, as "Bring your own logs" shows,
    on a real instance in DAGSTER_HOME."""
    from flywheel_assets.cli import main

    monkeypatch.setenv("FLYWHEEL_START_DATE", DAYS[0])
    monkeypatch.setenv("FLYWHEEL_SIGNALS_GRADES", "click:1")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["example-logs", "--days", "1", "--requests-per-day", "600", *data]) == 0
    assert main(["rotate", "--day", DAYS[0], *data]) == 0
    out = capsys.readouterr().out
    assert "1800 impressions" in out and "0 rows quarantined" in out and "gate:" in out
    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        assert [r.tags.get("flywheel/cli") for r in instance.get_runs()] == ["rotate"]
