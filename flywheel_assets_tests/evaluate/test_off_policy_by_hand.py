"""Each off-policy estimator against figures worked out by hand on a tiny log, and the
trust guard."""

import numpy as np
import pytest

from flywheel_assets.evaluate import off_policy as op


def _item_position_log():
    # Three requests over the same pool {A (column 0), B (column 1)}, one slot:
    # r0 showed A (μ 0.5) and got a click; r1 showed B (μ 0.5), no click; r2 showed A
    # (μ 0.25), no click.
    pool = np.array([["A", "B"]] * 3, dtype=object)
    return op.LoggedSlates(
        n_requests=3, pool_sizes=np.array([2, 2, 2]),
        imp_request=np.array([0, 1, 2]), imp_column=np.array([0, 1, 0]),
        imp_position=np.array([1, 1, 1]), imp_propensity=np.array([0.5, 0.5, 0.25]),
        imp_reward=np.array([1.0, 0.0, 0.0]), pool_items=pool,
        supported_pairs=frozenset({("A", 1), ("B", 1)}))


Q = np.array([[0.6, 0.2]] * 3)  # the reward model: A 0.6, B 0.2


def test_item_position_estimators_of_a_deterministic_policy_by_hand():
    log = _item_position_log()
    always_a = op.Policy.deterministic(np.array([[0], [0], [0]]))
    est = op.estimate(op.item_position_terms(log, always_a, Q, k=1, value="reward"))
    # IPS: (2·1 + 0 + 4·0) / 3; SNIPS: (2·1 + 4·0) / (2 + 4);
    # DR: [0.6 + 2(1 − 0.6)] + 0.6 + [0.6 + 4(0 − 0.6)] = 0.2, over 3.
    assert est["ips"]["value"] == pytest.approx(2 / 3)
    assert est["snips"]["value"] == pytest.approx(1 / 3)
    assert est["dr"]["value"] == pytest.approx(0.2 / 3)
    # Weights 2 and 4: ESS 36 / 20 of 3 valued impressions; the largest is 4/6 of the total.
    assert est["effective_sample_size"] == pytest.approx(1.8)
    assert est["ess_share"] == pytest.approx(0.6)
    assert est["max_weight_share"] == pytest.approx(2 / 3)
    assert est["support"] == 1.0


def test_item_position_estimators_of_a_stochastic_policy_by_hand():
    log = _item_position_log()
    uniform = op.Policy.uniform(log.pool_sizes, k=1)
    est = op.estimate(op.item_position_terms(log, uniform, Q, k=1, value="reward"))
    # p = 1/2 everywhere. IPS: (½·2·1 + ½·2·0 + ½·4·0) / 3; SNIPS: 1 / (1 + 1 + 2);
    # DR: r0 0.4 + ½·2·0.4 = 0.8, r1 0.4 − ½·2·0.2 = 0.2, r2 0.4 − ½·4·0.6 = −0.8.
    assert est["ips"]["value"] == pytest.approx(1 / 3)
    assert est["snips"]["value"] == pytest.approx(0.25)
    assert est["dr"]["value"] == pytest.approx(0.2 / 3)
    on_policy = op.estimate(log.logged_value(1, "reward"))
    assert on_policy["dr"]["value"] == pytest.approx(1 / 3)
    assert on_policy["effective_sample_size"] == 3


def test_exposure_estimators_by_hand():
    # One request, pool of three, two slots: columns 0 and 1 shown at positions 1 and 2
    # with grades 1 and 2; examination 1 and 0.5; exposure 0.8, 0.6, 0.4.
    log = op.LoggedSlates(
        n_requests=1, pool_sizes=np.array([3]), imp_request=np.array([0, 0]),
        imp_column=np.array([0, 1]), imp_position=np.array([1, 2]),
        imp_propensity=np.array([0.5, 0.5]), imp_reward=np.array([1.0, 2.0]),
        pool_items=np.array([["a", "b", "c"]], dtype=object), supported_pairs=frozenset(),
        exposure=np.array([[0.8, 0.6, 0.4]]), examination=np.array([1.0, 0.5]))
    shown_position = np.array([[1.0, 2.0, np.nan]])
    grade = np.array([[1.0, 2.0, 0.0]])
    q = np.array([[0.5, 3.0, 1.0]])
    target = op.Policy.deterministic(np.array([[1, 2]]))  # b first, then c
    est = op.estimate(op.exposure_terms(log, target, q, shown_position, grade, k=2))
    c2 = 1 / np.log2(3)
    # b was shown at 2: g = 2 / 0.5 = 4, w = 1 / 0.6; c was never shown.
    assert est["ips"]["value"] == pytest.approx(4 / 0.6)
    assert est["snips"]["value"] == pytest.approx(4.0)
    assert est["dr"]["value"] == pytest.approx(3 + (4 - 3) / 0.6 + c2 * 1.0)
    assert est["effective_sample_size"] == pytest.approx(1.0)
    assert est["ess_share"] == pytest.approx(0.5)
    assert est["support"] == 1.0


def test_a_partial_slate_is_valued_on_the_positions_it_logged():
    log = op.LoggedSlates(
        n_requests=2, pool_sizes=np.array([2, 2]), imp_request=np.array([0, 0, 1]),
        imp_column=np.array([0, 1, 1]), imp_position=np.array([1, 2, 1]),
        imp_propensity=np.array([0.5, 0.5, 0.5]), imp_reward=np.array([1.0, 1.0, 1.0]),
        pool_items=np.array([["A", "B"]] * 2, dtype=object),
        supported_pairs=frozenset({("A", 1), ("B", 2), ("B", 1)}))
    terms = op.item_position_terms(log, op.Policy.deterministic(np.array([[0, 1], [0, 1]])),
                                   np.zeros((2, 2)), k=2, value="reward")
    # Request 1 logged only position 1: its position 2 is not valued (not dropped).
    assert terms.valued.tolist() == [[True, True], [True, False]]
    assert op.estimate(terms)["ips"]["value"] == pytest.approx((2 + 2) / 2)


def test_paired_comparison_with_the_logs_own_value():
    log = _item_position_log()
    always_a = op.item_position_terms(log, op.Policy.deterministic(np.zeros((3, 1), int)), Q, 1,
                                      "reward")
    diff = op.compare(always_a, log.logged_value(1, "reward"))
    assert diff["ips"]["delta"] == pytest.approx(2 / 3 - 1 / 3)
    with pytest.raises(ValueError):
        op.compare(always_a, np.zeros(5))


def test_the_logging_policy_replayed_is_worth_exactly_its_own_value_at_k():
    """A deterministic logger (propensity 1) that logged 4 positions, valued at K = 2: the
    same ranking, off-policy, is worth exactly the logs' own value over positions 1-2."""
    log = op.LoggedSlates(
        n_requests=2, pool_sizes=np.array([4, 4]), imp_request=np.repeat([0, 1], 4),
        imp_column=np.tile([0, 1, 2, 3], 2), imp_position=np.tile([1, 2, 3, 4], 2),
        imp_propensity=np.ones(8), imp_reward=np.array([1.0, 0, 1, 1, 0, 1, 1, 1]),
        pool_items=np.array([["a", "b", "c", "d"]] * 2, dtype=object),
        supported_pairs=frozenset({(i, k + 1) for k, i in enumerate("abcd")}))
    same = op.item_position_terms(log, op.Policy.deterministic(np.array([[0, 1], [0, 1]])),
                                  np.zeros((2, 4)), k=2, value="reward")
    diff = op.compare(same, log.logged_value(2, "reward"))
    assert diff["ips"]["delta"] == pytest.approx(0.0) and diff["dr"]["delta"] == pytest.approx(0.0)
    assert log.logged_value(2, "reward").tolist() == [1.0, 1.0]


def test_exposure_values_compare_with_the_logs_in_the_same_unit():
    """Exposure family: the logger's own slate, valued off-policy, equals the logs' value
    with each reward divided by θ of its position; a request that logged one position is
    valued on that position only."""
    log = op.LoggedSlates(
        n_requests=2, pool_sizes=np.array([3, 3]), imp_request=np.array([0, 0, 1]),
        imp_column=np.array([0, 1, 0]), imp_position=np.array([1, 2, 1]),
        imp_propensity=np.ones(3), imp_reward=np.array([1.0, 2.0, 3.0]),
        pool_items=np.array([["a", "b", "c"]] * 2, dtype=object), supported_pairs=frozenset(),
        exposure=np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]), examination=np.array([1.0, 0.5]))
    shown_position = np.array([[1.0, 2.0, np.nan], [1.0, np.nan, np.nan]])
    grade = np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    terms = op.exposure_terms(log, op.Policy.deterministic(np.array([[0, 1], [0, 1]])),
                              np.full((2, 3), 5.0), shown_position, grade, k=2)
    assert terms.valued.tolist() == [[True, True], [True, False]]
    logged = log.logged_value(2, debias=True)
    assert logged.tolist() == pytest.approx([1 + 2 / 0.5 / np.log2(3), 3.0])
    diff = op.compare(terms, logged)
    assert diff["ips"]["delta"] == pytest.approx(0.0) and diff["dr"]["delta"] == pytest.approx(0.0)


def test_the_trust_guard_names_each_problem():
    ok = {"effective_sample_size": 5000, "ess_share": 0.5, "max_weight_share": 0.001, "support": 1.0}
    assert op.trust(ok, 100, 0.01, 0.05, 0.95) == []
    bad = {"effective_sample_size": 2, "ess_share": 0.0002, "max_weight_share": 0.6, "support": 0.4}
    problems = op.trust(bad, 100, 0.01, 0.05, 0.95)
    assert len(problems) == 4
    assert "effective sample size 2" in problems[0] and "support 40.0%" in problems[3]
