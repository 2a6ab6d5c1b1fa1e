"""The serving policy: rank a candidate pool, explore, log exact propensities.

With probability ``1 - epsilon`` a request gets the greedy slate (top-k by score, ties
broken by pool order); with probability ``epsilon`` it gets a uniformly random ordered
subset of the pool. Hence, exactly, for item ``i`` at position ``k`` of a pool of ``P``:

    propensity = (1 - epsilon) * [greedy slate puts i at k] + epsilon / P

Every position of every item has propensity >= epsilon / P > 0 when epsilon > 0, which
is what off-policy evaluation and position-bias estimation need.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from flywheel_assets.core import model as model_lib
from flywheel_assets.core import model_store

POPULARITY_POLICY = "popularity"


@dataclass(frozen=True)
class Slates:
    """Served slates for R requests over pools of P candidates, K positions each."""

    columns: np.ndarray        # R×K: index into the request's pool, position order
    propensities: np.ndarray   # R×K: P(that item at that position | pool, scores)
    explored: np.ndarray       # R: the request got a random slate


def rank_slates(scores: np.ndarray, slate_size: int, epsilon: float,
                rng: np.random.Generator) -> Slates:
    """Slates for a matrix of scores (R requests × P candidates), vectorised."""
    n_requests, pool = scores.shape
    if slate_size > pool:
        raise ValueError(f"slate size {slate_size} exceeds pool size {pool}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    # Stable sort on -score: equal scores keep pool order, so the greedy slate is a
    # deterministic function of the scores and its propensity is exact.
    greedy = np.argsort(-scores, axis=1, kind="stable")[:, :slate_size]
    explored = rng.random(n_requests) < epsilon
    random_order = np.argsort(rng.random((n_requests, pool)), axis=1)[:, :slate_size]
    columns = np.where(explored[:, None], random_order, greedy)
    propensities = epsilon / pool + (1.0 - epsilon) * (columns == greedy)
    return Slates(columns=columns, propensities=propensities, explored=explored)


@dataclass
class RankingPolicy:
    """The champion model if there is one, else popularity from the item snapshot."""

    version: str
    pipeline: object | None = None

    def score(self, candidates: pd.DataFrame) -> np.ndarray:
        if self.pipeline is None:
            return np.log1p(candidates["popularity"].to_numpy(dtype="float64"))
        return model_lib.score(self.pipeline, candidates)


def popularity_policy() -> RankingPolicy:
    return RankingPolicy(version=POPULARITY_POLICY)


def current_policy(models_dir: Path) -> RankingPolicy:
    """Whatever the champion pointer says now (popularity when nothing was promoted)."""
    version = model_store.champion_version(models_dir)
    if version is None:
        return popularity_policy()
    return RankingPolicy(version=version, pipeline=model_store.load_model(models_dir, version))
