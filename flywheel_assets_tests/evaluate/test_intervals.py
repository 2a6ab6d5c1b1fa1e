"""Off-policy intervals carry every source of error: the examination curve's own
uncertainty, users who make several requests; and a slate missing positions is partial."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from flywheel_assets.evaluate import logged_pools
from flywheel_assets.evaluate import off_policy as op
from flywheel_assets.serve.serving import greedy_slates, rank_slates

N, P, K = 3000, 12, 4


def _log(seed=0, copies=1):
    """An epsilon-greedy log of N requests, each repeated ``copies`` times (identical
    requests of one user), with its shown positions and grades."""
    rng = np.random.default_rng(seed)
    g = rng.uniform(0, 3, (N, P))
    theta = 1.0 / np.arange(1, K + 1)
    slates = rank_slates(g + rng.normal(0, 1.5, (N, P)), K, 0.2, rng)
    examined = rng.random((N, K)) < theta
    reward = examined * rng.binomial(3, np.take_along_axis(g, slates.columns, 1) / 3)
    same = np.repeat(np.arange(N), copies)
    g, columns, reward = g[same], slates.columns[same], reward[same]
    n = N * copies
    shown_position = np.full((n, P), np.nan)
    np.put_along_axis(shown_position, columns, np.tile(np.arange(1, K + 1), (n, 1)), 1)
    grade = np.zeros((n, P))
    np.put_along_axis(grade, columns, reward, 1)
    log = op.LoggedSlates(
        n_requests=n, pool_sizes=np.full(n, P), imp_request=np.repeat(np.arange(n), K),
        imp_column=columns.ravel(), imp_position=np.tile(np.arange(1, K + 1), n),
        imp_propensity=slates.propensities[same].ravel(),
        imp_reward=reward.ravel().astype(float), pool_items=np.tile(np.arange(P), (n, 1)),
        supported_pairs=frozenset(), exposure=slates.exposure[same], examination=theta)
    return log, g, shown_position, grade


def _terms(log, scores, shown_position, grade):
    policy = op.Policy.deterministic(greedy_slates(scores, K))
    return op.exposure_terms(log, policy, np.zeros(scores.shape), shown_position, grade, K)


def test_the_curves_uncertainty_widens_the_difference_and_leaves_the_point():
    log, g, shown, grade = _log()
    rng = np.random.default_rng(1)
    better, worse = g + rng.normal(0, 0.3, g.shape), g + rng.normal(0, 1.5, g.shape)
    fixed = op.compare(_terms(log, better, shown, grade), _terms(log, worse, shown, grade))
    # θ̂ known to ±25% at every position but the first.
    draws = log.examination * np.exp(rng.normal(0, 0.25, (300, K)))
    draws[:, 0] = 1.0
    uncertain_log = dataclasses.replace(log, examination_draws=draws)
    uncertain = op.compare(_terms(uncertain_log, better, shown, grade),
                           _terms(uncertain_log, worse, shown, grade))
    for name in op.ESTIMATORS:
        assert uncertain[name]["delta"] == pytest.approx(fixed[name]["delta"])
        assert uncertain[name]["se"] > 1.2 * fixed[name]["se"], (name, fixed, uncertain)


def test_a_users_requests_resample_together():
    """Each user makes four identical requests: an interval that treats them as
    independent is half as wide as it should be; the clustered one is not."""
    log, g, shown, grade = _log(seed=2, copies=4)
    scores = g + np.random.default_rng(3).normal(0, 0.5, g.shape)
    by_request = op.estimate(_terms(log, scores, shown, grade))
    clustered_log = dataclasses.replace(log, cluster=np.repeat(np.arange(N), 4))
    by_user = op.estimate(_terms(clustered_log, scores, shown, grade))
    assert by_user["dr"]["value"] == pytest.approx(by_request["dr"]["value"])
    assert by_user["dr"]["se"] / by_request["dr"]["se"] == pytest.approx(2.0, rel=0.25)


def test_the_interval_is_normal_around_the_point():
    log, g, shown, grade = _log(seed=4)
    est = op.estimate(_terms(log, g, shown, grade), level=0.9)
    for name in op.ESTIMATORS:
        e = est[name]
        assert e["se"] > 0
        assert e["ci_high"] - e["value"] == pytest.approx(e["value"] - e["ci_low"])
        assert e["ci_high"] - e["value"] == pytest.approx(1.6449 * e["se"], rel=1e-3)


def test_a_slate_missing_its_last_positions_is_partial():
    pools = pd.DataFrame({"request_id": ["full"] * 5 + ["short"] * 5 + ["gap"] * 5
                          + ["small_pool"] * 2,
                          "item_id": list("abcde") * 3 + ["a", "b"]})
    shown = pd.DataFrame({"request_id": ["full"] * 3 + ["short"] * 2 + ["gap"] * 2
                          + ["small_pool"] * 2,
                          "position": [1, 2, 3, 1, 2, 1, 3, 1, 2]})
    partial = set(logged_pools.partial_slates(pools, shown, slate_size=3))
    # "short" logged positions 1-2 of 3 (count = max, the old test, passed it).
    assert partial == {"short", "gap"}


def _frames(slates, n, p, k, exposure=None):
    """The pool and impression frames `logged_pools.assemble` reads, from served slates."""
    request = np.repeat([f"r{i}" for i in range(n)], p)
    pools = pd.DataFrame({"request_id": request, "user_key": request,
                          "item_id": np.tile([f"i{j:02d}" for j in range(p)], n),
                          "exposure": (slates.exposure if exposure is None else exposure).ravel(),
                          "greedy": np.where(slates.greedy_position > 0,
                                             slates.greedy_position, np.nan).ravel(),
                          "category": None, "popularity": np.nan})
    shown = pd.DataFrame({"request_id": np.repeat([f"r{i}" for i in range(n)], k),
                          "item_id": [f"i{j:02d}" for j in slates.columns.ravel()],
                          "position": np.tile(np.arange(1, k + 1), n),
                          "propensity": slates.propensities.ravel(), "grade": 0.0})
    return pools, shown


def test_epsilon_greedy_logs_are_recognised_and_others_are_not():
    """A day whose candidates log greedy positions is valued by the policy-aware family,
    with each request's ε recovered from its propensities; exposures that are not
    epsilon-greedy's fall back to the exposure family and say why."""
    n, p, k = 300, 8, 3
    rng = np.random.default_rng(3)
    slates = rank_slates(rng.normal(size=(n, p)), k, 0.3, rng)
    day = logged_pools.assemble(*_frames(slates, n, p, k), "test", {}, k)
    assert day.family == "policy-aware" and day.family_note == ""
    assert np.allclose(day.log.epsilon, 0.3) and (day.log.depth == k).all()
    # The same slates with another logger's exposures (mass moved between candidates).
    other = slates.exposure.copy()
    other[:, 0], other[:, 1] = other[:, 0] + 0.01, other[:, 1] - 0.01
    day = logged_pools.assemble(*_frames(slates, n, p, k, exposure=other), "test", {}, k)
    assert day.family == "exposure"
    assert "not those of epsilon-greedy" in day.family_note


def test_epsilon_greedy_is_recognised_on_propensities_rounded_to_six_decimals():
    """ε from an impression off the greedy slate is propensity × P: rounding grows P-fold,
    and the check allows for it."""
    n, p, k = 400, 37, 10
    rng = np.random.default_rng(4)
    slates = rank_slates(rng.normal(size=(n, p)), k, 0.13, rng)
    rounded = dataclasses.replace(slates, exposure=np.round(slates.exposure, 6),
                                  propensities=np.round(slates.propensities, 6))
    day = logged_pools.assemble(*_frames(rounded, n, p, k), "test", {}, k)
    assert day.family == "policy-aware", day.family_note
    assert np.allclose(day.log.epsilon, 0.13, atol=1e-4)
