"""Off-policy estimators against a synthetic logging process whose truth is known."""

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


def _rows(g, theta, slates, reward, target_scores, reward_model=None):
    order = greedy_slates(target_scores, K)
    shown_at = np.full((N, P), np.nan)
    np.put_along_axis(shown_at, slates.columns, np.arange(1, K + 1)[None, :].repeat(N, 0), axis=1)
    grade = np.zeros((N, P))
    np.put_along_axis(grade, slates.columns, reward, axis=1)
    pick = lambda a: np.take_along_axis(a, order, axis=1).ravel()  # noqa: E731
    pos = pick(shown_at)
    shown = ~np.isnan(pos)
    th = np.where(shown, theta[np.nan_to_num(pos).astype(int) - 1], 1.0)
    q = pick(reward_model) if reward_model is not None else np.zeros(N * K)
    rows = off_policy.TargetRows(
        request=np.repeat(np.arange(N), K), position=np.tile(np.arange(1, K + 1), N),
        shown=shown, exposure=pick(slates.exposure),
        debiased_grade=np.where(shown, pick(grade) / th, 0.0), reward_model=q, n_requests=N)
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
        off_policy.compare(better, off_policy.TargetRows(*[a[:5] for a in (
            better.request, better.position, better.shown, better.exposure,
            better.debiased_grade, better.reward_model)], n_requests=1))
