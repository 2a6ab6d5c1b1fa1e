"""Ranking, exposure and calibration metrics (plain Python)."""

import numpy as np
import pandas as pd
import pytest

from flywheel_assets.evaluate import metrics


def test_ndcg_orders_perfect_reversed_and_ignores_requests_without_gain():
    groups = np.array(["a"] * 4 + ["b"] * 3)
    labels = np.array([3, 2, 0, 1, 0, 0, 0])
    perfect = np.array([4, 3, 1, 2, 9, 8, 7.0])
    assert metrics.ndcg_at_k(groups, labels, perfect) == pytest.approx(1.0)
    reversed_ = -perfect
    # Linear gain (the gain of the off-policy values and the oracle): reversed, "a" reads
    # grades 0, 1, 2, 3 down the slate; ideally 3, 2, 1, 0. ("b" has no gain: left out.)
    d = 1 / np.log2(np.arange(2, 6))
    expected = (0 * d[0] + 1 * d[1] + 2 * d[2] + 3 * d[3]) / (3 * d[0] + 2 * d[1] + 1 * d[2])
    assert metrics.ndcg_at_k(groups, labels, reversed_) == pytest.approx(expected)
    assert metrics.ndcg_at_k(groups, labels, perfect, k=1) == pytest.approx(1.0)


def test_ranking_report_uses_examined_impressions_for_the_primary_metric():
    # Slate served in position order; the bottom item was never examined (no event).
    frame = pd.DataFrame({"request_id": ["r"] * 3, "label_grade": [0, 2, 0],
                          "n_interactions": [1, 1, 0]})
    prefers_unexamined = np.array([0.1, 0.5, 0.9])
    report = metrics.ranking_report(frame, prefers_unexamined)
    assert report["ndcg_at_k"] == pytest.approx(1.0)
    assert report["ndcg_at_k_all_logged"] < 1.0


def test_exposure_gini_and_coverage():
    assert metrics.exposure_gini(np.full(50, 7)) == pytest.approx(0.0)
    one_takes_all = np.zeros(100)
    one_takes_all[3] = 1000
    assert metrics.exposure_gini(one_takes_all) == pytest.approx(0.99)
    # Unexposed items count: the same exposures over a bigger catalogue are less even.
    assert metrics.exposure_gini(np.r_[np.ones(10), np.zeros(90)]) > metrics.exposure_gini(np.ones(10))
    assert metrics.catalog_coverage(np.array([[1, 2], [2, 3]]), 10) == pytest.approx(0.3)


def test_calibrated_log_loss_rewards_informative_scores():
    from flywheel_assets.evaluate.metrics import calibrated_log_loss

    rng = np.random.default_rng(0)
    y = rng.random(4000) < 0.3
    informative = y + rng.normal(0, 0.5, 4000)
    noise = rng.normal(0, 1, 4000)
    base = -(0.3 * np.log(0.3) + 0.7 * np.log(0.7))       # entropy of the base rate
    assert calibrated_log_loss(y, informative) < 0.8 * base
    assert abs(calibrated_log_loss(y, noise) - base) < 0.02
    assert np.isnan(calibrated_log_loss(np.zeros(10, bool), noise[:10]))


def test_slices_carry_the_paired_difference_with_the_champion():
    import numpy as np
    import pandas as pd

    from flywheel_assets.evaluate.evaluation import slice_metrics

    rng = np.random.default_rng(0)
    n = 300
    holdout = pd.DataFrame({"request_id": np.repeat(np.arange(n), 3),
                            "label_grade": rng.integers(0, 4, 3 * n),
                            "n_interactions": 1, "device": "tv"})
    truth = holdout["label_grade"].to_numpy(dtype=float)
    scores = {"candidate": truth + rng.normal(0, 0.5, 3 * n),
              "champion": rng.normal(0, 1, 3 * n)}
    out = slice_metrics(holdout, scores, k=3, level=0.9)["device=tv"]
    paired = out["candidate_vs_champion"]
    assert paired["delta"] == pytest.approx(out["candidate"] - out["champion"])
    assert paired["ci_low"] < paired["delta"] < paired["ci_high"] and paired["ci_low"] > 0
