"""The champion measured against the hidden truth.

A fixed panel of human users (the same every day) each gets a candidate pool drawn
from that day's catalogue; a policy ranks it; NDCG@10 compares the policy's top 10
with the ideal top 10 under the true expected grade E[grade | examined] (linear gain,
log2 discount). Regret is the ideal DCG minus the policy's, per request. Exposure Gini
(over the whole catalogue, unexposed items included) and catalogue coverage describe
how concentrated the policy's top 10s are on the same panel.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from flywheel_assets.core import metrics
from flywheel_assets.core.serving import RankingPolicy
from flywheel_assets.simulation import truth
from flywheel_assets.simulation.config import WorldConfig
from flywheel_assets.simulation.traffic import candidate_frame, sample_pools


def _dcg(gains: np.ndarray, k: int) -> np.ndarray:
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    return (gains[:, :k] * discounts).sum(axis=1)


def evaluate_policies(config: WorldConfig, date: dt.date, policies: dict[str, RankingPolicy],
                      k: int = 10) -> dict[str, dict[str, float]]:
    """NDCG@k and regret@k of each policy on the day's fixed evaluation panel."""
    day = config.day_index(date)
    cat = truth.catalogue(config, day)
    pop = truth.population(config, day)
    humans = np.flatnonzero(~pop.is_bot)
    panel_rng = np.random.default_rng([config.seed, 200])
    users = np.sort(panel_rng.choice(humans, min(config.oracle_requests, len(humans)),
                                     replace=False))
    pool_rng = np.random.default_rng([config.seed, 201, day])
    pools = sample_pools(pool_rng, cat.items["popularity"].to_numpy(), len(users),
                         config.pool_size, config.popularity_skew)
    ts = pd.Series(np.full(len(users), pd.Timestamp(date, tz="UTC") + pd.Timedelta(hours=12)))
    device = np.full(len(users), "mobile")
    candidates = candidate_frame(pop.users, cat.items, users, pools, ts, device)
    gains = truth.expected_grade(truth.utility(
        config, pop.taste[users][:, None, :], cat.latent[pools], cat.quality[pools]))
    ideal = _dcg(-np.sort(-gains, axis=1), k)
    out = {}
    for name, policy in policies.items():
        scores = policy.score(candidates).reshape(pools.shape)
        order = np.argsort(-scores, axis=1, kind="stable")
        dcg = _dcg(np.take_along_axis(gains, order, axis=1), k)
        top_items = np.take_along_axis(pools, order[:, :k], axis=1)
        exposures = np.bincount(top_items.ravel(), minlength=len(cat.items))
        out[name] = {"ndcg_at_10": float(np.mean(dcg / ideal)),
                     "regret_at_10": float(np.mean(ideal - dcg)),
                     "exposure_gini": metrics.exposure_gini(exposures),
                     "catalog_coverage": metrics.catalog_coverage(top_items, len(cat.items)),
                     "policy_version": policy.version}
    return out
