"""The serving policy logs the exact probability of each item at each position."""

import numpy as np
import pytest

from flywheel_assets.serve.serving import Reranking, greedy_slates, popularity_tiers, rank_slates


def test_logged_propensities_match_empirical_frequencies():
    rng = np.random.default_rng(1)
    pool, k, eps, draws = 7, 4, 0.3, 60_000
    # Ties on purpose: the greedy order must still be deterministic.
    scores = np.tile(np.array([0.9, 0.5, 0.5, 0.1, 0.8, 0.2, 0.5]), (draws, 1))
    slates = rank_slates(scores, k, eps, rng)
    counts = np.zeros((pool, k))
    logged = np.full((pool, k), np.nan)
    for position in range(k):
        items = slates.columns[:, position]
        counts[:, position] = np.bincount(items, minlength=pool)
        for item in range(pool):
            seen = slates.propensities[items == item, position]
            if len(seen):
                assert np.allclose(seen, seen[0]), "one (item, position) → one propensity"
                logged[item, position] = seen[0]
    empirical = counts / draws
    # Every (item, position) was drawn (exploration reaches all), and each logged
    # propensity agrees with its frequency within 5 binomial standard errors.
    assert not np.isnan(logged).any()
    se = np.sqrt(logged * (1 - logged) / draws)
    assert np.all(np.abs(empirical - logged) <= 5 * se + 1e-12), (empirical, logged)
    # A slate is a set of distinct items; each position holds exactly one item.
    assert all(len(set(row)) == k for row in slates.columns[:500])
    assert np.allclose(logged.sum(axis=0), 1.0)


def test_greedy_slate_is_top_k_and_exploration_off_means_certainty():
    scores = np.array([[0.1, 0.7, 0.3, 0.9]])
    slates = rank_slates(scores, 3, 0.0, np.random.default_rng(0))
    assert slates.columns.tolist() == [[3, 1, 2]]
    assert np.allclose(slates.propensities, 1.0)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="slate size"):
        rank_slates(np.zeros((1, 3)), 4, 0.1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="epsilon"):
        rank_slates(np.zeros((1, 3)), 2, 1.5, np.random.default_rng(0))


def test_diversity_reranking_spreads_categories_and_zero_is_plain_top_k():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(200, 30))
    groups = rng.integers(0, 6, size=(200, 30))
    plain = greedy_slates(scores, 10)
    assert (greedy_slates(scores, 10, groups, 0.0) == plain).all()
    assert (plain == np.argsort(-scores, axis=1, kind="stable")[:, :10]).all()
    diverse = greedy_slates(scores, 10, groups, 0.3)
    distinct = lambda s: np.mean([len(set(g[c])) for g, c in zip(groups, s)])  # noqa: E731
    assert distinct(diverse) > distinct(plain)
    assert (diverse[:, 0] == plain[:, 0]).all()  # the best item still comes first
    for row in diverse:
        assert len(set(row)) == 10


def test_popularity_balance_mixes_the_pools_head_and_tail():
    rng = np.random.default_rng(5)
    # Scores that favour popular items, as a model fed with popularity does.
    popularity = rng.lognormal(3, 1.5, size=(300, 30))
    scores = np.log(popularity) + rng.normal(0, 1, size=(300, 30))
    tiers = popularity_tiers(popularity)
    assert (np.sort(tiers, axis=1) == np.repeat([0, 1, 2], 10)).all()  # thirds of each pool
    assert (tiers[np.arange(300), popularity.argmax(axis=1)] == 0).all()
    plain = greedy_slates(scores, 10)
    assert (greedy_slates(scores, 10, None, 0.0, popularity, 0.0) == plain).all()
    balanced = greedy_slates(scores, 10, None, 0.0, popularity, 0.6)
    head_share = lambda s: (np.take_along_axis(tiers, s, axis=1) == 0).mean()  # noqa: E731
    assert head_share(balanced) < head_share(plain)
    assert (balanced[:, 0] == plain[:, 0]).all()  # the best item still comes first
    assert all(len(set(row)) == 10 for row in balanced)
    with pytest.raises(ValueError, match="popularity_balance"):
        greedy_slates(scores, 10, None, 0.0, popularity, 1.5)


def test_logged_exposure_is_the_probability_of_being_shown():
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(1, 8)).repeat(40000, axis=0)
    popularity = rng.lognormal(3, 1, size=(1, 8)).repeat(40000, axis=0)
    slates = rank_slates(scores, 3, 0.3, rng, categories=np.tile(np.arange(8) % 3, (40000, 1)),
                         popularity=popularity, reranking=Reranking(0.2, 0.6))
    shown = np.zeros((40000, 8), dtype=bool)
    np.put_along_axis(shown, slates.columns, True, axis=1)
    assert np.allclose(shown.mean(axis=0), slates.exposure[0], atol=0.01)
