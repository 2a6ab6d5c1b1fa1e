"""Off-policy estimators against a synthetic logging process whose truth is known."""

import dataclasses

import numpy as np
import pytest

from flywheel_assets.evaluate import off_policy
from flywheel_assets.serve.serving import greedy_slates, rank_slates

N, P, K = 6000, 20, 5


def _world(seed=0, epsilon=0.2):
    rng = np.random.default_rng(seed)
    g = rng.uniform(0, 3, (N, P))                       # grade once examined
    theta = 1.0 / np.arange(1, K + 1)                   # examination by position
    logging_scores = g + rng.normal(0, 1.5, (N, P))     # a mediocre logging policy
    slates = rank_slates(logging_scores, K, epsilon, rng)
    examined = rng.random((N, K)) < theta[None, :]
    shown_g = np.take_along_axis(g, slates.columns, axis=1)
    reward = examined * rng.binomial(3, shown_g / 3)    # integer grades, mean g
    return g, theta, slates, reward


def _log(theta, slates, reward):
    n, k = slates.columns.shape
    shown_position = np.full((N, P), np.nan)
    np.put_along_axis(shown_position, slates.columns, np.arange(1, k + 1)[None, :].repeat(N, 0), axis=1)
    grade = np.zeros((N, P))
    np.put_along_axis(grade, slates.columns, reward, axis=1)
    log = off_policy.LoggedSlates(
        n_requests=N, pool_sizes=np.full(N, P), imp_request=np.repeat(np.arange(N), k),
        imp_column=slates.columns.ravel(), imp_position=np.tile(np.arange(1, k + 1), N),
        imp_propensity=slates.propensities.ravel(), imp_reward=reward.ravel().astype(float),
        pool_items=np.tile(np.arange(P), (N, 1)),
        supported_pairs=frozenset(), exposure=slates.exposure, examination=theta)
    return log, shown_position, grade


def _rows(g, theta, slates, reward, target_scores, reward_model=None):
    """The exposure family's terms for "serve by ``target_scores``", and its true value."""
    order = greedy_slates(target_scores, K)
    log, shown_position, grade = _log(theta, slates, reward)
    q = reward_model if reward_model is not None else np.zeros((N, P))
    rows = off_policy.exposure_terms(log, off_policy.Policy.deterministic(order), q,
                                     shown_position, grade, K)
    truth = float((np.take_along_axis(g, order, axis=1) / np.log2(np.arange(2, K + 2))).sum(1).mean())
    return rows, truth


def test_estimators_recover_the_value_of_another_policy():
    g, theta, slates, reward = _world()
    rng = np.random.default_rng(1)
    target = g + rng.normal(0, 0.5, g.shape)             # a better policy than the logger
    rows, truth = _rows(g, theta, slates, reward, target, reward_model=g * 0.8)
    est = off_policy.estimate(rows, n_boot=200)
    for name in off_policy.ESTIMATORS:
        assert abs(est[name]["value"] - truth) / truth < 0.05, (name, est[name], truth)
        assert est[name]["ci_low"] < est[name]["value"] < est[name]["ci_high"]
    assert est["support"] == 1.0
    assert 0 < est["effective_sample_size"] < N * K


def test_item_position_estimators_value_deterministic_and_stochastic_policies():
    """With per-impression propensities only, the value in observed rewards of a better
    ranking and of a uniformly random one, against their truth."""
    g, theta, slates, reward = _world(seed=7, epsilon=0.5)
    log, _, _ = _log(theta, slates, reward)
    c = 1 / np.log2(np.arange(2, K + 2))
    observed = g * 1.0  # E[reward | item at k] = θ_k g
    target = greedy_slates(g + np.random.default_rng(8).normal(0, 0.5, g.shape), K)
    truth = float((np.take_along_axis(observed, target, axis=1) * theta * c).sum(1).mean())
    q = np.zeros((N, P, K))
    est = off_policy.estimate(off_policy.item_position_terms(
        log, off_policy.Policy.deterministic(target), q, K))
    for name in off_policy.ESTIMATORS:
        assert abs(est[name]["value"] - truth) / truth < 0.1, (name, est[name], truth)
    uniform_truth = float((g.mean(axis=1)[:, None] * theta * c).sum(1).mean())
    q_good = g[:, :, None] * theta[None, None, :]
    est = off_policy.estimate(off_policy.item_position_terms(
        log, off_policy.Policy.uniform(log.pool_sizes, K), q_good, K))
    for name in off_policy.ESTIMATORS:
        assert abs(est[name]["value"] - uniform_truth) / uniform_truth < 0.1, (name, est[name])


def test_doubly_robust_is_tighter_with_a_good_reward_model():
    g, theta, slates, reward = _world(seed=3)
    target = g + np.random.default_rng(4).normal(0, 0.5, g.shape)
    good, _ = _rows(g, theta, slates, reward, target, reward_model=g)
    width = lambda e: e["dr"]["ci_high"] - e["dr"]["ci_low"]  # noqa: E731
    est = off_policy.estimate(good)
    assert width(est) < est["ips"]["ci_high"] - est["ips"]["ci_low"]


def test_a_policy_the_logger_cannot_show_is_flagged_by_support():
    g, theta, slates, reward = _world(epsilon=0.0)
    target = -g                                          # the opposite of the logger
    rows, truth = _rows(g, theta, slates, reward, target)
    est = off_policy.estimate(rows)
    assert est["support"] < 0.5
    assert est["ips"]["value"] < 0.5 * truth             # biased: it cannot see the choices


def test_paired_difference_separates_better_from_worse():
    g, theta, slates, reward = _world(seed=5)
    rng = np.random.default_rng(6)
    better, _ = _rows(g, theta, slates, reward, g + rng.normal(0, 0.3, g.shape))
    worse, _ = _rows(g, theta, slates, reward, rng.normal(0, 1, g.shape))
    diff = off_policy.compare(better, worse)
    assert all(diff[n]["ci_low"] > 0 for n in off_policy.ESTIMATORS), diff
    same = off_policy.compare(better, better)
    assert same["dr"]["delta"] == 0 and same["dr"]["ci_low"] == 0 == same["dr"]["ci_high"]
    with pytest.raises(ValueError):
        off_policy.compare(better, np.zeros(5))


def _aware_rows(g, theta, slates, reward, target_scores, epsilon, reward_model=None):
    """The policy-aware family's terms for "serve by ``target_scores``"."""
    log, shown_position, grade = _log(theta, slates, reward)
    log = dataclasses.replace(log, greedy=slates.greedy_position,
                              epsilon=np.full(N, epsilon), depth=np.full(N, K))
    q = reward_model if reward_model is not None else np.zeros((N, P))
    return off_policy.policy_aware_terms(log, off_policy.Policy.deterministic(
        greedy_slates(target_scores, K)), q, shown_position, grade, K)


def test_policy_aware_estimators_are_unbiased_and_tighter_than_exposure():
    """ρ = Σ_j P(i at j) θ_j pools an item's examination over every position it could
    have had: the same value as the exposure family, with a smaller standard error."""
    g, theta, slates, reward = _world(seed=11, epsilon=0.2)
    target = g + np.random.default_rng(12).normal(0, 0.5, g.shape)
    exposure_rows, truth = _rows(g, theta, slates, reward, target)
    aware = off_policy.estimate(_aware_rows(g, theta, slates, reward, target, 0.2), n_boot=300)
    exposure = off_policy.estimate(exposure_rows, n_boot=300)
    assert aware["family"] == "policy-aware"
    for name in off_policy.ESTIMATORS:
        assert abs(aware[name]["value"] - truth) < 4 * aware[name]["se"], (name, aware[name], truth)
        assert aware[name]["se"] < exposure[name]["se"], (name, aware[name], exposure[name])
    # With a reward model, the doubly robust estimate is the tightest of the family.
    dr = off_policy.estimate(_aware_rows(g, theta, slates, reward, target, 0.2,
                                         reward_model=g * 0.8), n_boot=300)
    assert dr["dr"]["se"] < aware["ips"]["se"]


def test_policy_aware_examination_propensity_by_hand():
    """ε = 0.2, P = 4 candidates, a slate of 2, θ = (1, 0.5): the greedy item at
    position 2 has ρ = 0.8 · 0.5 + 0.2/4 · (1 + 0.5); an item outside the greedy slate
    only the uniform part."""
    theta = np.array([1.0, 0.5])
    rho = off_policy.examination_propensity(theta, np.array([1, -1]), np.array([0.8, 0.8]),
                                            np.array([0.05, 0.05]), np.array([2, 2]))
    assert np.allclose(rho, [[0.8 * 0.5 + 0.05 * 1.5, 0.05 * 1.5]])


def test_policy_aware_replicates_in_bounded_passes_give_the_same_interval(monkeypatch):
    """Many keys (ε varying by request) are valued in passes of bounded memory, with
    the same numbers as one pass."""
    g, theta, slates, reward = _world(seed=13, epsilon=0.2)
    target = g + np.random.default_rng(14).normal(0, 0.5, g.shape)
    terms = _aware_rows(g, theta, slates, reward, target, 0.2, reward_model=g * 0.8)
    one_pass = off_policy.estimate(terms, n_boot=50)
    monkeypatch.setattr(off_policy._Aware, "MAX_CELLS", 100)
    passes = off_policy.estimate(terms, n_boot=50)
    for name in off_policy.ESTIMATORS:
        assert passes[name]["value"] == pytest.approx(one_pass[name]["value"])
        assert passes[name]["se"] == pytest.approx(one_pass[name]["se"])
