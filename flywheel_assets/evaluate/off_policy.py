"""Off-policy value of a ranking policy from logged slates: IPS, SNIPS and doubly robust.

The value of a deterministic ranking policy π on a request is its expected DCG@K,

    V(π) = Σ_k d_k · g(π_k),     d_k = 1 / log2(k + 1),

where g(i) is the grade a person gives item i once they look at it (the graded label of
the signal hierarchy). The logs give, per request, the candidate pool with each
candidate's exposure propensity μ(i) = P(logging policy shows i anywhere in the slate),
and for each shown item its position j and observed grade r (0 when silent). Under the
position-based examination model, E[r | i shown at j] = θ_j · g(i), with θ the
examination curve from `position_bias`, so r / θ_j estimates g(i) and

    w = [π_k was shown] / μ(π_k)

reweights it to the policy's choice (E[w] = 1: the item-level estimator of Li et al.,
"Offline evaluation of ranking policies with click models", 2018). Per request:

    IPS  = Σ_k d_k · w_k · r_k / θ_j
    DR   = Σ_k d_k · (q_k + w_k · (r_k / θ_j − q_k))     (q: a reward model's g estimate)
    SNIPS: each position's weighted mean Σ_n w ĝ / Σ_n w, then Σ_k d_k · that.

Confidence intervals come from a Poisson bootstrap over requests; a paired bootstrap
(the same resamples for both policies) gives the interval of the difference between two
policies, which is what the promotion gate needs. Everything is numpy on arrays of one
row per (request, target position).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class TargetRows:
    """One policy's top-K on logged requests, one row per (request, position)."""

    request: np.ndarray      # int request index 0..N-1
    position: np.ndarray     # 1..K, the policy's rank of the item
    shown: np.ndarray        # bool: the logging policy showed this item
    exposure: np.ndarray     # μ: P(logging policy shows the item)
    debiased_grade: np.ndarray  # r / θ_j where shown, 0 otherwise
    reward_model: np.ndarray    # q: the reward model's estimate of g for the item
    n_requests: int


def _discount(position: np.ndarray) -> np.ndarray:
    return 1.0 / np.log2(position.astype("float64") + 1.0)


def _weights(rows: TargetRows) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(rows.shown, 1.0 / np.where(rows.exposure > 0, rows.exposure, np.inf), 0.0)


def support(rows: TargetRows) -> float:
    """Share of the policy's choices the logging policy could have shown (μ > 0).
    Below 1 the estimators are biased: they never see what the logs could not show."""
    return float(np.mean(rows.exposure > 0)) if len(rows.exposure) else 0.0


def effective_sample_size(rows: TargetRows) -> float:
    """(Σw)² / Σw² over the policy's (request, position) choices."""
    w = _weights(rows)
    denom = float((w ** 2).sum())
    return float(w.sum() ** 2 / denom) if denom > 0 else 0.0


def _per_request(rows: TargetRows) -> dict[str, np.ndarray]:
    """Per-request terms (N-vectors, or N×K for the self-normalised one)."""
    n, d, w = rows.n_requests, _discount(rows.position), _weights(rows)
    k_max = int(rows.position.max()) if len(rows.position) else 0
    ips = np.bincount(rows.request, d * w * rows.debiased_grade, minlength=n)
    dr = np.bincount(rows.request, d * (rows.reward_model + w * (rows.debiased_grade
                                                                 - rows.reward_model)), minlength=n)
    num = np.zeros((n, k_max))
    den = np.zeros((n, k_max))
    np.add.at(num, (rows.request, rows.position - 1), w * rows.debiased_grade)
    np.add.at(den, (rows.request, rows.position - 1), w)
    return {"ips": ips, "dr": dr, "snips_num": num, "snips_den": den,
            "discounts": _discount(np.arange(1, k_max + 1))}


def _values(terms: dict[str, np.ndarray], resample: np.ndarray) -> dict[str, np.ndarray]:
    """Estimator values under resampling weights (B×N; a row of ones = the estimate)."""
    total = resample.sum(axis=1)
    num, den = resample @ terms["snips_num"], resample @ terms["snips_den"]
    snips = (np.divide(num, den, out=np.zeros_like(num), where=den > 0)
             * terms["discounts"]).sum(axis=1)
    return {"ips": resample @ terms["ips"] / total, "dr": resample @ terms["dr"] / total,
            "snips": snips}


def _poisson(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).poisson(1.0, size=(n_boot, n)).astype("float64")


def estimate(rows: TargetRows, n_boot: int = 200, seed: int = 0, level: float = 0.95) -> dict:
    """IPS, SNIPS and DR of one policy, each with its bootstrap interval, plus ESS and
    support."""
    terms = _per_request(rows)
    point = _values(terms, np.ones((1, rows.n_requests)))
    boot = _values(terms, _poisson(rows.n_requests, n_boot, seed))
    tail = (1.0 - level) / 2
    out = {"requests": rows.n_requests, "effective_sample_size": effective_sample_size(rows),
           "support": support(rows), "level": level}
    for name in ESTIMATORS:
        lo, hi = np.quantile(boot[name], [tail, 1 - tail])
        out[name] = {"value": float(point[name][0]), "ci_low": float(lo), "ci_high": float(hi)}
    return out


def compare(candidate: TargetRows, champion: TargetRows, n_boot: int = 200, seed: int = 0,
            level: float = 0.95) -> dict[str, dict[str, float]]:
    """Candidate − champion for each estimator, with a paired bootstrap interval."""
    if candidate.n_requests != champion.n_requests:
        raise ValueError("both policies must be evaluated on the same logged requests")
    resample = _poisson(candidate.n_requests, n_boot, seed)
    ones = np.ones((1, candidate.n_requests))
    a_terms, b_terms = _per_request(candidate), _per_request(champion)
    a, b = _values(a_terms, ones), _values(b_terms, ones)
    a_boot, b_boot = _values(a_terms, resample), _values(b_terms, resample)
    tail = (1.0 - level) / 2
    out = {}
    for name in ESTIMATORS:
        diff = a_boot[name] - b_boot[name]
        lo, hi = np.quantile(diff, [tail, 1 - tail])
        out[name] = {"delta": float(a[name][0] - b[name][0]), "ci_low": float(lo),
                     "ci_high": float(hi), "level": level}
    return out
