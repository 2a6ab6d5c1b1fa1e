"""The champion measured against the hidden truth.

A fixed panel of human users (the same every day) each gets a candidate pool drawn
from that day's catalogue; a policy ranks it as it is served (diversity re-ranking
included, exploration aside); NDCG@10 compares the policy's top 10
with the ideal top 10 under the true expected grade E[grade | examined] (linear gain,
log2 discount). Regret is the ideal DCG minus the policy's, per request. Exposure Gini
(over the whole catalogue, unexposed items included) and catalogue coverage describe
how concentrated the policy's top 10s are on the same panel.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from flywheel_assets.evaluate import metrics
from flywheel_assets.serve.serving import RankingPolicy
from flywheel_assets.simulation import truth
from flywheel_assets.simulation.config import WorldConfig
from flywheel_assets.simulation.traffic import candidate_frame, category_codes, sample_pools


def _dcg(gains: np.ndarray, k: int) -> np.ndarray:
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    return (gains[:, :k] * discounts).sum(axis=1)


def evaluate_policies(config: WorldConfig, date: dt.date, policies: dict[str, RankingPolicy],
                      k: int = 10, past_plays: np.ndarray | None = None,
                      users: np.ndarray | None = None, items: np.ndarray | None = None,
                      state=None) -> dict[str, dict[str, float]]:
    """NDCG@k and regret@k of each policy on the day's fixed evaluation panel (pools
    drawn from the day's catalogue, popularity with ``past_plays`` as served); or on
    the panel ``users`` (user indices), and with pools drawn uniformly from ``items``
    (item indices) when given: the cold-start slices (:func:`cold_start`). ``state``:
    who is in a responsive world's product (their sign-up days are features)."""
    day = config.day_index(date)
    cat = truth.catalogue(config, day, past_plays)
    pop = truth.population(config, day, state)
    if users is None:
        # The panel: people of the initial population (the reserve of a responsive world
        # never enters it, so the panel is the same every day and in every world).
        humans = np.flatnonzero(~pop.is_bot[:config.n_users])
        panel_rng = np.random.default_rng([config.seed, 200])
        users = np.sort(panel_rng.choice(humans, min(config.oracle_requests, len(humans)),
                                         replace=False))
    pool_rng = np.random.default_rng([config.seed, 201, day])
    if items is None:
        pools = sample_pools(pool_rng, cat.items["popularity"].to_numpy(), len(users),
                             config.pool_size, config.popularity_skew)
    else:
        size = min(config.pool_size, len(items))
        pools = np.array([pool_rng.choice(items, size, replace=False) for _ in users])
    ts = pd.Series(np.full(len(users), pd.Timestamp(date, tz="UTC") + pd.Timedelta(hours=12)))
    device = np.full(len(users), "mobile")
    candidates = candidate_frame(pop.users, cat.items, users, pools, ts, device)
    gains = truth.expected_grade(truth.utility(
        config, pop.taste[users][:, None, :], cat.latent[pools], cat.quality[pools]))
    ideal = _dcg(-np.sort(-gains, axis=1), k)
    out = {}
    for name, policy in policies.items():
        scores = policy.score(candidates).reshape(pools.shape)
        # What users would see (exploration aside): the served ranking, re-ranked for
        # categories and popularity as the product serves it.
        order = config.reranking.slates(scores, k, category_codes(cat.items, pools),
                                        cat.items["popularity"].to_numpy()[pools])
        dcg = _dcg(np.take_along_axis(gains, order, axis=1), k)
        top_items = np.take_along_axis(pools, order, axis=1)
        exposures = np.bincount(top_items.ravel(), minlength=len(cat.items))
        out[name] = {"ndcg_at_10": float(np.mean(dcg / ideal)),
                     "regret_at_10": float(np.mean(ideal - dcg)),
                     "exposure_gini": metrics.exposure_gini(exposures),
                     "catalog_coverage": metrics.catalog_coverage(top_items, len(cat.items)),
                     "policy_version": policy.version}
    return out


def _valued_requests(config: WorldConfig, date: dt.date, requests: dict,
                     exclude: set[str], past_plays: np.ndarray | None):
    """The requests the product values (bots, users without training consent, users
    erased that day and ``exclude``, the training split, left out), their pools in
    item-id order (the product's tie-break), the logged slates' pool columns in that
    order (when the truth kept them), and the true gains."""
    day = config.day_index(date)
    cat = truth.catalogue(config, day, past_plays)
    pop = truth.population(config, day)
    user_idx, pools = requests["user_idx"], requests["pools"]
    consent = pop.users["consent_training"].to_numpy(dtype=bool)
    keep = (~requests["is_bot"] & consent[user_idx]
            & ~np.isin(user_idx, pop.deleted_today)
            & ~np.isin(requests["request_id"], list(exclude)))
    user_idx, pools = user_idx[keep], pools[keep]
    id_rank = np.argsort(np.argsort(cat.items["item_id"].to_numpy()))
    order = np.argsort(id_rank[pools], axis=1)
    shown = None
    if "columns" in requests:
        # The logged slates as pool columns of the reordered pools.
        inverse = np.argsort(order, axis=1)
        shown = np.take_along_axis(inverse, requests["columns"][keep].astype(np.int64), axis=1)
    pools = np.take_along_axis(pools, order, axis=1)
    gains = truth.expected_logged_grade(truth.utility(
        config, pop.taste[user_idx][:, None, :], cat.latent[pools], cat.quality[pools]),
        config.explicit_feedback_rate)
    return keep, user_idx, pools, shown, gains, cat, pop


def off_policy_truth(config: WorldConfig, date: dt.date, policy: RankingPolicy | None,
                     requests: dict, k: int = 10, exclude: set[str] = frozenset(),
                     past_plays: np.ndarray | None = None) -> dict:
    """The true value of "serve each logged pool by ``policy``'s scores" (re-ranked as
    configured, exploration aside) on the day's requests, in the unit the product's
    off-policy estimators use: mean DCG@k of the grade the signal hierarchy reads once
    an item is examined. ``policy`` None: the slates the logging policy actually served
    (exploration included; the truth must have kept them). The requests are the ones
    the product values (:func:`_valued_requests`)."""
    keep, user_idx, pools, shown, gains, cat, pop = _valued_requests(
        config, date, requests, exclude, past_plays)
    if policy is None:
        if shown is None:
            raise ValueError("the day's truth did not keep the served slates")
        order = shown[:, :k]
    else:
        ts = pd.Series(pd.Timestamp(date, tz="UTC")
                       + pd.to_timedelta(np.round(requests["seconds"][keep], 3), unit="s"))
        candidates = candidate_frame(pop.users, cat.items, user_idx, pools, ts,
                                     requests["device"][keep])
        scores = policy.score(candidates).reshape(pools.shape)
        order = config.reranking.slates(scores, k, category_codes(cat.items, pools),
                                        cat.items["popularity"].to_numpy()[pools])
    return {"value": float(np.mean(_dcg(np.take_along_axis(gains, order, axis=1), k))),
            "requests": int(keep.sum())}


NEW_ITEM_DAYS = 7
NEW_USER_DAYS = 14


def cold_start(config: WorldConfig, date: dt.date, policies: dict[str, RankingPolicy],
               state=None, past_plays: np.ndarray | None = None, k: int = 10) -> dict:
    """The policies on the two cold-start slices, against the truth: ``new_items``, the
    panel ranking pools drawn from items at most 7 days old (as the holdout's slice);
    ``new_users``, users who joined in the last 14 days ranking pools drawn as usual.
    ``state``: who is in the product on the day (a responsive world's state after the
    day before, as the day was served). A slice the day does not have is absent."""
    day = config.day_index(date)
    cat = truth.catalogue(config, day, past_plays)
    published = cat.items["published_date"].to_numpy(dtype="datetime64[D]")
    fresh = np.flatnonzero(published >= np.datetime64(date) - np.timedelta64(NEW_ITEM_DAYS, "D"))
    out = {}
    if len(fresh) >= k:
        out["new_items"] = {"items": int(len(fresh)), "policies": evaluate_policies(
            config, date, policies, k, past_plays, items=fresh)}
    if state is not None:
        joined = np.flatnonzero(state.joined & (state.join_day > 0)
                                & (state.join_day > day - NEW_USER_DAYS) & ~state.churned)
        if len(joined):
            out["new_users"] = {"users": int(len(joined)), "policies": evaluate_policies(
                config, date, policies, k, past_plays, users=joined, state=state)}
    return out
