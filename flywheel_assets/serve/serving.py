"""The serving policy: rank a candidate pool, explore, log exact propensities.

With probability ``1 - epsilon`` a request gets the greedy slate (top-k by score, ties
broken by pool order, optionally re-ranked for diversity); with probability ``epsilon``
it gets a uniformly random ordered subset of the pool. Hence, exactly, for item ``i`` at
position ``k`` of a pool of ``P`` and a slate of ``K``:

    propensity = (1 - epsilon) * [greedy slate puts i at k] + epsilon / P
    exposure   = (1 - epsilon) * [greedy slate shows i]     + epsilon * K / P

``propensity`` is logged per impression (position bias, training weights), ``exposure``
per candidate of the pool (off-policy evaluation of another ranking), with the
candidate's ``greedy_position`` (its position in the greedy slate, none when outside
it): with both, evaluation knows P(i at k) for every position, which the lowest-variance
(policy-aware) estimator needs. Both are > 0 for
every candidate when epsilon > 0, which is what those estimators need.

The optional re-ranking is maximal marginal relevance over item categories and
popularity: each next slot takes the candidate maximising

    (1 - diversity) * relevance - diversity * [its category is already in the slate]
                                - popularity_balance * (share of the slate so far from
                                                        its popularity tier)

relevance being the score min-max scaled within the request and the tiers the thirds of
the pool by popularity (head, middle, tail). ``diversity = popularity_balance = 0`` is
the plain top-k. Why the popularity term: when what is shown today becomes tomorrow's
popularity (the view counts a catalogue shows), a ranker that favours popular items
makes them more popular; categories alone do not break that loop, a slate that mixes
the pool's head with its middle and tail does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from flywheel_assets import warehouse
from flywheel_assets.curate.profiles import load_store
from flywheel_assets.ingest.pseudonymise import key_map
from flywheel_assets.train import features as feats
from flywheel_assets.train import model as model_lib
from flywheel_assets.train import model_store

POPULARITY_POLICY = "popularity"
# Serving reads the profiles from the warehouse: while a writer holds it, it retries.
READ_ATTEMPTS, READ_WAIT_SECONDS = 60, 1.0


@dataclass(frozen=True)
class Slates:
    """Served slates for R requests over pools of P candidates, K positions each."""

    columns: np.ndarray        # R×K: index into the request's pool, position order
    propensities: np.ndarray   # R×K: P(that item at that position | pool, scores)
    explored: np.ndarray       # R: the request got a random slate
    exposure: np.ndarray       # R×P: P(candidate shown anywhere in the slate | pool, scores)
    greedy_position: np.ndarray  # R×P: 1-based position in the greedy slate (0: outside it)


POPULARITY_TIERS = 3


@dataclass(frozen=True)
class Reranking:
    """How the serving system re-ranks the greedy slate (module docstring)."""

    diversity: float = 0.0
    popularity_balance: float = 0.0

    def slates(self, scores: np.ndarray, slate_size: int, categories: np.ndarray | None,
               popularity: np.ndarray | None) -> np.ndarray:
        return greedy_slates(scores, slate_size, categories, self.diversity, popularity,
                             self.popularity_balance)


PLAIN_TOP_K = Reranking()


def popularity_tiers(popularity: np.ndarray) -> np.ndarray:
    """R×P tier of each candidate within its pool: 0 for the most popular third, 2 for
    the least popular (ties in pool order)."""
    pool = popularity.shape[1]
    rank = np.argsort(np.argsort(-popularity, axis=1, kind="stable"), axis=1)
    return np.minimum(rank * POPULARITY_TIERS // pool, POPULARITY_TIERS - 1)


def greedy_slates(scores: np.ndarray, slate_size: int, groups: np.ndarray | None = None,
                  diversity: float = 0.0, popularity: np.ndarray | None = None,
                  popularity_balance: float = 0.0) -> np.ndarray:
    """The deterministic slate (R×K pool indices): top-k by score, or maximal marginal
    relevance over ``groups`` (R×P category codes) and the pool's popularity tiers
    (``popularity``: R×P) when ``diversity`` or ``popularity_balance`` > 0."""
    n_requests, pool = scores.shape
    if slate_size > pool:
        raise ValueError(f"slate size {slate_size} exceeds pool size {pool}")
    if not 0.0 <= diversity < 1.0:
        raise ValueError(f"diversity must be in [0, 1), got {diversity}")
    if not 0.0 <= popularity_balance <= 1.0:
        raise ValueError(f"popularity_balance must be in [0, 1], got {popularity_balance}")
    by_category = diversity > 0.0 and groups is not None
    by_popularity = popularity_balance > 0.0 and popularity is not None
    if not (by_category or by_popularity):
        # Stable sort on -score: equal scores keep pool order, so the greedy slate is a
        # deterministic function of the scores and its propensity is exact.
        return np.argsort(-scores, axis=1, kind="stable")[:, :slate_size]
    low, high = scores.min(axis=1, keepdims=True), scores.max(axis=1, keepdims=True)
    relevance = (scores - low) / np.where(high > low, high - low, 1.0)
    rows = np.arange(n_requests)
    covered = np.zeros((n_requests, pool), dtype=bool)
    tiers = popularity_tiers(popularity) if by_popularity else None
    same_tier = np.zeros((n_requests, pool))
    value = (1.0 - diversity) * relevance
    out = np.empty((n_requests, slate_size), dtype=np.int64)
    for slot in range(slate_size):
        penalty = diversity * covered if by_category else 0.0
        if by_popularity and slot:
            penalty = penalty + popularity_balance * same_tier / slot
        pick = np.argmax(value - penalty, axis=1)  # first maximum: pool order
        out[:, slot] = pick
        value[rows, pick] = -np.inf
        if by_category:
            covered |= groups == groups[rows, pick][:, None]
        if by_popularity:
            same_tier += tiers == tiers[rows, pick][:, None]
    return out


def rank_slates(scores: np.ndarray, slate_size: int, epsilon: float,
                rng: np.random.Generator, categories: np.ndarray | None = None,
                popularity: np.ndarray | None = None,
                reranking: Reranking = PLAIN_TOP_K) -> Slates:
    """Slates for a matrix of scores (R requests × P candidates), vectorised; the greedy
    slate re-ranked by ``reranking`` over the candidates' ``categories`` and
    ``popularity`` (R×P each)."""
    n_requests, pool = scores.shape
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    greedy = reranking.slates(scores, slate_size, categories, popularity)
    explored = rng.random(n_requests) < epsilon
    random_order = np.argsort(rng.random((n_requests, pool)), axis=1)[:, :slate_size]
    columns = np.where(explored[:, None], random_order, greedy)
    propensities = epsilon / pool + (1.0 - epsilon) * (columns == greedy)
    in_greedy = np.zeros((n_requests, pool), dtype=bool)
    np.put_along_axis(in_greedy, greedy, True, axis=1)
    exposure = epsilon * slate_size / pool + (1.0 - epsilon) * in_greedy
    greedy_position = np.zeros((n_requests, pool), dtype=np.int64)
    np.put_along_axis(greedy_position, greedy, np.arange(1, greedy.shape[1] + 1)[None, :], axis=1)
    return Slates(columns=columns, propensities=propensities, explored=explored,
                  exposure=exposure, greedy_position=greedy_position)


@dataclass
class RankingPolicy:
    """The champion model if there is one, else popularity from the item snapshot.

    ``profiles``: where a model that reads what users did (`p_*` features) gets them:
    a callable from a set of row days to the profile snapshot of each
    (:func:`warehouse_profiles`); rows that carry raw ``user_id`` are pseudonymised with
    ``pseudonym_secret`` first, as ingestion does."""

    version: str
    pipeline: object | None = None
    profiles: Callable | None = None
    pseudonym_secret: str | None = None

    def score(self, candidates: pd.DataFrame) -> np.ndarray:
        if self.pipeline is None:
            return np.log1p(candidates["popularity"].to_numpy(dtype="float64"))
        if self.profiles is not None and reads_profiles(self.pipeline):
            candidates = self.with_profiles(candidates)
        return model_lib.score(self.pipeline, candidates)

    def with_profiles(self, candidates: pd.DataFrame) -> pd.DataFrame:
        """The candidates with their `p_*` features, as this policy scores them."""
        rows = candidates
        if "user_key" not in rows and "user_id" in rows:
            if not self.pseudonym_secret:
                raise ValueError("serving raw user ids needs the pseudonym secret ingestion "
                                 "uses: without it every user would read as unknown")
            keys = key_map(rows["user_id"].dropna().unique(), self.pseudonym_secret)
            rows = rows.assign(user_key=rows["user_id"].map(keys))
        return feats.with_profiles(rows, self.profiles(set(feats.row_days(rows))))


def reads_profiles(pipeline) -> bool:
    return any(c in feats.PROFILE_FEATURES for c in feats.spec_of(pipeline).numeric)


def warehouse_profiles(path) -> Callable:
    """Row days → profile snapshots, read from the warehouse at ``path`` (its file or
    its lake; read-only, briefly); none when it has no profiles yet."""
    def load(days) -> dict:
        if not isinstance(path, warehouse.Lake) and not Path(path).exists():
            return {}
        # Another process may hold the file for a write (a rotation running): wait for
        # it, a write is one short transaction.
        for attempt in range(READ_ATTEMPTS):
            try:
                with warehouse.connect(path, read_only=True) as conn:
                    try:
                        return load_store(conn, days)
                    except duckdb.CatalogException:  # a warehouse from before profiles
                        return {}
            except duckdb.IOException:
                if attempt == READ_ATTEMPTS - 1:
                    raise
                time.sleep(READ_WAIT_SECONDS)
        return {}
    return load


def popularity_policy() -> RankingPolicy:
    return RankingPolicy(version=POPULARITY_POLICY)


def model_policy(settings, version: str) -> RankingPolicy:
    """Model ``version`` as the product serves it (``settings``: the flywheel's): a model
    that reads profile features gets them from the warehouse."""
    pipeline = model_store.load_model(settings.models, version, settings.training.model)
    return RankingPolicy(version=version, pipeline=pipeline,
                         profiles=warehouse_profiles(settings.warehouse),
                         pseudonym_secret=settings.pseudonym_secret)


def current_policy(settings) -> RankingPolicy:
    """Whatever the champion pointer says now (popularity when nothing was promoted)."""
    version = model_store.champion_version(settings.models)
    if version is None:
        return popularity_policy()
    return model_policy(settings, version)
