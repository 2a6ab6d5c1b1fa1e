"""The gate benchmark's instruments: policies known in truth, tested by the product's own
estimators and decision rule, and the counting of its decisions."""

import pandas as pd
import pytest

from flywheel_assets.harness import gate_benchmark as gb
from flywheel_assets.settings import Settings
from flywheel_assets.simulation.config import WorldConfig

CONFIG = WorldConfig(seed=3, requests_per_day=3000)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    settings = Settings.from_env(tmp_path_factory.mktemp("gate_benchmark"))
    champion = gb.TruthPolicy("champion", CONFIG, 1.0, 11)
    day = gb.served_day(CONFIG, 1, champion, settings)
    return settings, champion, day, gb.curve([day.explored], CONFIG.slate_size)


def _test(served, contenders):
    settings, champion, day, theta = served
    return gb.test_day(day, theta, contenders, champion, CONFIG, settings, CONFIG.slate_size,
                       CONFIG.requests_per_day, CONFIG.pool_size)


def test_a_copy_of_the_champion_is_worth_exactly_nothing_more(served):
    _, champion, _, _ = served
    copy = gb.TruthPolicy("copy", CONFIG, 1.0, 99, base_seed=champion.seed, correlation=1.0)
    result = _test(served, {"copy": copy})["copy"]
    assert result["true_delta"] == 0 and result["delta"] == pytest.approx(0, abs=1e-9)
    assert not result["passed"]


def test_the_better_candidate_is_better_by_the_effect_in_truth(served):
    settings, champion, day, _ = served
    n, pool = CONFIG.requests_per_day, CONFIG.pool_size
    sigma = gb.calibrate_sigma(day, champion, 0.02, 0.8, CONFIG, CONFIG.slate_size, n, pool)
    probe = gb.TruthPolicy("probe", CONFIG, sigma, champion.seed + 999, champion.seed, 0.8)
    gain = (gb.true_value(day, gb.policy_scores(probe, day, n, pool), CONFIG, CONFIG.slate_size)
            / gb.true_value(day, gb.policy_scores(champion, day, n, pool), CONFIG,
                            CONFIG.slate_size))
    assert 0 < sigma < champion.sigma and gain == pytest.approx(1.02, abs=0.002)


def test_a_ranking_by_the_truth_itself_is_found_better(served):
    oracle = gb.TruthPolicy("oracle", CONFIG, 0.0, 5)
    result = _test(served, {"oracle": oracle})["oracle"]
    assert result["true_delta"] > 0 and result["ci_low"] > 0
    assert result["ci_low"] <= result["true_delta"] <= result["ci_high"]
    # The world logs greedy positions: the product values it policy-aware, and the same
    # test by the exposure family, side by side, has the larger standard error.
    assert result["family"] == "policy-aware"
    side = result["estimators"]
    assert side["policy-aware/dr"]["delta"] == pytest.approx(result["delta"])
    assert side["policy-aware/dr"]["se"] < side["exposure/dr"]["se"]
    assert "exposure/dr, champion's scores" in side


def test_decisions_count_a_confirmation_only_on_the_next_day():
    rows = pd.DataFrame([
        # Passed on its day and the next: promoted under the confirmed rule.
        {"world": "w", "seed": 1, "candidate": "aa-1", "kind": "aa", "age": 0, "passed": True,
         "true_delta": 0.0, "true_champion": 4.0},
        {"world": "w", "seed": 1, "candidate": "aa-1", "kind": "aa", "age": 1, "passed": True,
         "true_delta": 0.0, "true_champion": 4.0},
        # Passed once only.
        {"world": "w", "seed": 1, "candidate": "aa-2", "kind": "aa", "age": 0, "passed": True,
         "true_delta": 0.0, "true_champion": 4.0},
        {"world": "w", "seed": 1, "candidate": "aa-2", "kind": "aa", "age": 1, "passed": False,
         "true_delta": 0.0, "true_champion": 4.0},
        # Never confirmed: the run ended (no next day).
        {"world": "w", "seed": 1, "candidate": "aa-3", "kind": "aa", "age": 0, "passed": True,
         "true_delta": 0.0, "true_champion": 4.0}])
    d = gb.decisions(rows).set_index("candidate")
    assert d["single"].tolist() == [True, True, True]
    assert d["confirmed"].tolist() == [True, False, False]
    low, high = gb.clopper_pearson(0, 100)
    assert low == 0 and high == pytest.approx(1 - 0.025 ** (1 / 100))
