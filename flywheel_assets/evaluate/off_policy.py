"""Off-policy value of any ranking policy, deterministic or stochastic, from logged slates:
IPS, SNIPS and doubly robust, each with its diagnostics.

The value of a policy π on a request is the expected sum over its slate of

    c_k · reward at position k,     c_k = 1 / log2(k + 1) ("dcg") or 1 ("reward"),

so "reward" is the expected reward per request (CTR-like on clicks) and "dcg" the DCG@K
of graded rewards (`evaluation.value`). A policy is given by its marginals
π(j, k | request): the probability it puts candidate j of the request's pool at position
k (1 for the chosen item of a deterministic ranking; 1/P for a uniformly random one).
Two ways to weigh the logs, by what the product logs:

- **item-position** (every product: the per-impression propensity μ(i, k) = P(logging
  policy put item i at position k)). Under the item-position model (the reward of an
  item at a position does not depend on the rest of the slate), for each logged
  impression w = π(i, k) / μ(i, k) reweights its observed reward r. The value is in
  observed rewards (examination included). Only positions a request logged are valued:
  a partial slate is valued on the positions it has, never dropped.
- **exposure** (products that log candidate pools with exposure propensities
  μ(i) = P(logging policy shows i anywhere)): a shown item's reward at its logged
  position j, divided by the examination probability θ_j (`position_bias`), estimates
  its reward once looked at, g(i); w = 1[shown] / μ(i) reweights it to the policy's
  choice (Li et al., "Offline evaluation of ranking policies with click models", 2018).
  The value is in examined grades. Far smaller weights than item-position on a
  ranking of many candidates, so it is preferred where pools are logged.

Per term (request n, candidate j, target position k, probability p, weight w,
observation y, reward model q):

    IPS   = (1/N) Σ p c_k w y
    DR    = (1/N) Σ p c_k (q + w (y − q))
    SNIPS = Σ_k c_k (N_k / N) · Σ p w y / Σ p w        (N_k: requests valued at k)

Diagnostics: the effective sample size (Σ v)² / Σ v² of the effective weights v = p·w,
as a count and as a share of the valued impressions; the largest single weight's share
of the total; the support (the share of the policy's mass on choices the logging policy
could make). The logging policy itself is valued on-policy: the logs' own mean reward.
Intervals come from a Poisson bootstrap over requests, paired (the same resamples) when
two policies are compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flywheel_assets.settings import POLICY_VALUES

ESTIMATORS = ("ips", "snips", "dr")


def position_weights(k: int, value: str = "dcg") -> np.ndarray:
    """c_1..c_k of the value (``dcg``: 1/log2(k+1); ``reward``: 1)."""
    if value not in POLICY_VALUES:
        raise ValueError(f"value must be one of {POLICY_VALUES}, got {value!r}")
    positions = np.arange(1, k + 1, dtype="float64")
    return 1.0 / np.log2(positions + 1.0) if value == "dcg" else np.ones(k)


@dataclass(frozen=True)
class Policy:
    """A policy's marginals on the logged requests, as sparse terms: it puts pool
    column ``column`` of request ``request`` at ``position`` with ``probability``."""

    request: np.ndarray      # int, 0..N-1
    column: np.ndarray       # int, pool column
    position: np.ndarray     # int, 1..K
    probability: np.ndarray  # float, > 0

    @classmethod
    def deterministic(cls, slates: np.ndarray) -> "Policy":
        """From R×K pool columns in position order (-1: no item at that position)."""
        n, k = slates.shape
        request, position = np.repeat(np.arange(n), k), np.tile(np.arange(1, k + 1), n)
        column = slates.ravel()
        keep = column >= 0
        return cls(request[keep], column[keep], position[keep], np.ones(int(keep.sum())))

    @classmethod
    def uniform(cls, pool_sizes: np.ndarray, k: int) -> "Policy":
        """A uniformly random ordered slate of min(k, P) from each pool: every candidate
        is at each position with probability 1 / P."""
        pool_sizes = np.asarray(pool_sizes, dtype=np.int64)
        parts = []
        for n, size in enumerate(pool_sizes):
            slots = min(k, int(size))
            if size == 0 or slots == 0:
                continue
            cols, pos = np.meshgrid(np.arange(size), np.arange(1, slots + 1), indexing="ij")
            parts.append((np.full(cols.size, n), cols.ravel(), pos.ravel(),
                          np.full(cols.size, 1.0 / size)))
        if not parts:
            empty = np.empty(0, np.int64)
            return cls(empty, empty, empty, np.empty(0))
        return cls(*(np.concatenate([p[i] for p in parts]) for i in range(4)))


@dataclass(frozen=True)
class LoggedSlates:
    """The logged requests OPE values policies on: each request's pool (R×P, padded)
    and its logged impressions (one row each)."""

    n_requests: int
    pool_sizes: np.ndarray         # R: candidates per request
    # Logged impressions.
    imp_request: np.ndarray        # M
    imp_column: np.ndarray         # M: pool column of the shown item (-1: not in the pool)
    imp_position: np.ndarray       # M: 1-based position
    imp_propensity: np.ndarray     # M: μ(item, position), per impression
    imp_reward: np.ndarray         # M: observed graded reward (0 when silent)
    # (item, position) pairs the day's logs show with μ > 0, as pool columns per request
    # are unknown: a set of (item id, position), and each pool column's item id.
    pool_items: np.ndarray         # R×P item ids (None in padding)
    supported_pairs: frozenset
    # Exposure (None when the product logs no exposure propensities): R×P.
    exposure: np.ndarray | None = None
    examination: np.ndarray | None = None  # θ_1..θ_max (1 where unknown)

    @property
    def positions_logged(self) -> np.ndarray:
        """R×Kmax: request n logged position k."""
        k_max = int(self.imp_position.max(initial=0))
        out = np.zeros((self.n_requests, k_max), dtype=bool)
        out[self.imp_request, self.imp_position - 1] = True
        return out

    def logged_value(self, k: int, value: str = "dcg", debias: bool = False) -> np.ndarray:
        """Per request, the logs' own (on-policy) value over positions 1..k, the ones a
        policy is valued on: Σ c_k r_k; with ``debias``, each reward divided by θ of its
        position (the exposure family's unit)."""
        c = position_weights(k, value)
        inside = self.imp_position <= k
        position, r = self.imp_position[inside], self.imp_reward[inside].astype("float64")
        if debias:
            r = r / _theta(self.examination, position)
        return np.bincount(self.imp_request[inside], c[position - 1] * r,
                           minlength=self.n_requests)

    @property
    def slate_lengths(self) -> np.ndarray:
        """R: the last position each request logged."""
        out = np.zeros(self.n_requests, dtype=np.int64)
        np.maximum.at(out, self.imp_request, self.imp_position)
        return out


def _theta(examination: np.ndarray | None, position: np.ndarray) -> np.ndarray:
    if examination is None or not len(examination):
        return np.ones(len(position))
    idx = np.clip(position - 1, 0, len(examination) - 1)
    theta = np.where(position - 1 < len(examination), examination[idx], 1.0)
    return np.maximum(theta, 1e-6)


@dataclass(frozen=True)
class Terms:
    """One policy's estimator terms on one log, and the requests × positions valued."""

    request: np.ndarray
    position: np.ndarray
    coef: np.ndarray         # p · c_k
    prob: np.ndarray         # p
    weight: np.ndarray       # w
    observed: np.ndarray     # y
    reward_model: np.ndarray  # q
    supported: np.ndarray    # bool: the logging policy could make this choice
    valued: np.ndarray       # R×K bool: request n valued at position k
    n_requests: int
    family: str


def item_position_terms(log: LoggedSlates, policy: Policy, reward_model: np.ndarray,
                        k: int, value: str = "dcg") -> Terms:
    """Terms of the item-position estimators. ``reward_model``: R×P×K or R×P (the same
    estimate at every position) of the expected observed reward."""
    c = position_weights(k, value)
    logged = np.full((log.n_requests, k), -1, dtype=np.int64)
    mu = np.ones((log.n_requests, k))
    reward = np.zeros((log.n_requests, k))
    inside = log.imp_position <= k
    r_, p_ = log.imp_request[inside], log.imp_position[inside] - 1
    logged[r_, p_] = log.imp_column[inside]
    mu[r_, p_] = log.imp_propensity[inside]
    reward[r_, p_] = log.imp_reward[inside]
    valued = np.zeros((log.n_requests, k), dtype=bool)
    valued[r_, p_] = True
    # Only the positions a request logged are valued.
    keep = (policy.position <= k) & valued[policy.request, np.minimum(policy.position, k) - 1]
    n, j, pos, p = (a[keep] for a in (policy.request, policy.column, policy.position,
                                      policy.probability))
    match = logged[n, pos - 1] == j
    weight = np.where(match, 1.0 / mu[n, pos - 1], 0.0)
    q = reward_model[n, j, pos - 1] if reward_model.ndim == 3 else reward_model[n, j]
    items = log.pool_items[n, j]
    supported = np.fromiter(((it, int(kk)) in log.supported_pairs for it, kk in zip(items, pos)),
                            dtype=bool, count=len(items))
    return Terms(n, pos, p * c[pos - 1], p, weight, np.where(match, reward[n, pos - 1], 0.0),
                 q, supported, valued, log.n_requests, "item-position")


def exposure_terms(log: LoggedSlates, policy: Policy, reward_model: np.ndarray,
                   shown_position: np.ndarray, grade: np.ndarray, k: int,
                   value: str = "dcg") -> Terms:
    """Terms of the exposure estimators. ``shown_position`` and ``grade``: R×P (NaN / 0
    where not shown); ``reward_model``: R×P, the expected grade once examined."""
    if log.exposure is None:
        raise ValueError("the exposure estimators need logged exposure propensities")
    c = position_weights(k, value)
    # A request is valued on the positions its logged slate had (as the logs' own value
    # is): a policy's item at position 8 of a 5-item slate has no observable outcome.
    keep = policy.position <= np.minimum(k, log.slate_lengths[policy.request])
    n, j, pos, p = (a[keep] for a in (policy.request, policy.column, policy.position,
                                      policy.probability))
    at = shown_position[n, j]
    shown = ~np.isnan(at)
    mu = log.exposure[n, j]
    positive = np.nan_to_num(mu, nan=0.0) > 0
    weight = np.where(shown & positive, 1.0 / np.where(positive, mu, 1.0), 0.0)
    observed = np.where(shown, grade[n, j] / _theta(log.examination,
                                                     np.nan_to_num(at, nan=1).astype(np.int64)), 0.0)
    valued = np.zeros((log.n_requests, k), dtype=bool)
    valued[n, pos - 1] = True
    return Terms(n, pos, p * c[pos - 1], p, weight, observed, reward_model[n, j], positive,
                 valued, log.n_requests, "exposure")


def diagnostics(terms: Terms) -> dict:
    """ESS (count and share of the valued impressions), the largest weight's share, support."""
    v = terms.prob * terms.weight
    total, squares = float(v.sum()), float((v ** 2).sum())
    valued = int(terms.valued.sum())
    ess = total ** 2 / squares if squares > 0 else 0.0
    mass = float(terms.prob.sum())
    return {"requests": terms.n_requests, "valued_impressions": valued,
            "effective_sample_size": ess, "ess_share": ess / valued if valued else 0.0,
            "max_weight_share": float(v.max()) / total if total > 0 else 1.0,
            "support": float(terms.prob[terms.supported].sum()) / mass if mass else 0.0,
            "family": terms.family}


def _per_request(terms: Terms) -> dict[str, np.ndarray]:
    n, k = terms.n_requests, terms.valued.shape[1]
    ips = np.bincount(terms.request, terms.coef * terms.weight * terms.observed, minlength=n)
    dr = np.bincount(terms.request, terms.coef * (terms.reward_model + terms.weight
                                                  * (terms.observed - terms.reward_model)),
                     minlength=n)
    num, den = np.zeros((n, k)), np.zeros((n, k))
    np.add.at(num, (terms.request, terms.position - 1), terms.prob * terms.weight * terms.observed)
    np.add.at(den, (terms.request, terms.position - 1), terms.prob * terms.weight)
    return {"ips": ips, "dr": dr, "snips_num": num, "snips_den": den,
            "valued": terms.valued.astype("float64"), "c": _coef_by_position(terms, k)}


def _coef_by_position(terms: Terms, k: int) -> np.ndarray:
    """c_k (recovered from the terms' p · c_k / p)."""
    c = np.zeros(k)
    nonzero = terms.prob > 0
    c[terms.position[nonzero] - 1] = terms.coef[nonzero] / terms.prob[nonzero]
    return c


def _values(per: dict[str, np.ndarray], resample: np.ndarray) -> dict[str, np.ndarray]:
    """Estimator values under resampling weights (B×N; a row of ones = the estimate)."""
    total = np.maximum(resample.sum(axis=1), 1e-12)
    num, den = resample @ per["snips_num"], resample @ per["snips_den"]
    share = (resample @ per["valued"]) / total[:, None]
    snips = (np.divide(num, den, out=np.zeros_like(num), where=den > 0) * share
             * per["c"]).sum(axis=1)
    return {"ips": resample @ per["ips"] / total, "dr": resample @ per["dr"] / total,
            "snips": snips}


def _on_policy(values: np.ndarray) -> dict[str, np.ndarray]:
    """The logs' own value per request, in the same shape as a policy's terms."""
    n = len(values)
    return {"ips": values, "dr": values, "snips_num": values[:, None],
            "snips_den": np.ones((n, 1)), "valued": np.ones((n, 1)), "c": np.ones(1)}


def _poisson(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).poisson(1.0, size=(n_boot, n)).astype("float64")


def _interval(boot: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(boot, [tail, 1 - tail])
    return float(lo), float(hi)


def estimate(terms: Terms | np.ndarray, n_boot: int = 200, seed: int = 0,
             level: float = 0.95) -> dict:
    """IPS, SNIPS and DR of one policy (``Terms``; or the logs' own per-request values
    for the logging policy), each with its bootstrap interval, plus the diagnostics."""
    if isinstance(terms, Terms):
        per, diag = _per_request(terms), diagnostics(terms)
    else:
        per = _on_policy(np.asarray(terms, dtype="float64"))
        diag = {"requests": len(terms), "valued_impressions": None,
                "effective_sample_size": float(len(terms)), "ess_share": 1.0,
                "max_weight_share": 1.0 / len(terms) if len(terms) else 1.0, "support": 1.0,
                "family": "on-policy"}
    n = len(per["ips"])
    point = _values(per, np.ones((1, n)))
    boot = _values(per, _poisson(n, n_boot, seed))
    out = {**diag, "level": level}
    for name in ESTIMATORS:
        lo, hi = _interval(boot[name], level)
        out[name] = {"value": float(point[name][0]), "ci_low": lo, "ci_high": hi}
    return out


def compare(candidate: Terms | np.ndarray, baseline: Terms | np.ndarray, n_boot: int = 200,
            seed: int = 0, level: float = 0.95) -> dict[str, dict[str, float]]:
    """Candidate − baseline for each estimator, with a paired bootstrap interval. Either
    side may be the logs' own per-request values (the logging policy, on-policy)."""
    per = [_per_request(t) if isinstance(t, Terms) else _on_policy(np.asarray(t, "float64"))
           for t in (candidate, baseline)]
    n = len(per[0]["ips"])
    if len(per[1]["ips"]) != n:
        raise ValueError("both policies must be evaluated on the same logged requests")
    resample = _poisson(n, n_boot, seed)
    ones = np.ones((1, n))
    a, b = (_values(p, ones) for p in per)
    a_boot, b_boot = (_values(p, resample) for p in per)
    out = {}
    for name in ESTIMATORS:
        lo, hi = _interval(a_boot[name] - b_boot[name], level)
        out[name] = {"delta": float(a[name][0] - b[name][0]), "ci_low": lo, "ci_high": hi,
                     "level": level}
    return out


def trust(estimate_: dict, min_ess: float, min_ess_share: float, max_weight_share: float,
          min_support: float) -> list[str]:
    """Why an estimate cannot be trusted (empty: it can): too few effective samples, in
    count or as a share, one weight carrying too much, or choices the logs cannot show."""
    problems = []
    ess, share = estimate_["effective_sample_size"], estimate_["ess_share"]
    if ess < min_ess:
        problems.append(f"effective sample size {ess:.0f} < {min_ess:g}")
    if share < min_ess_share:
        problems.append(f"effective sample size is {share:.2%} of the valued impressions "
                        f"(< {min_ess_share:.2%})")
    if estimate_["max_weight_share"] > max_weight_share:
        problems.append(f"one weight carries {estimate_['max_weight_share']:.1%} of the total "
                        f"(> {max_weight_share:.0%})")
    if estimate_["support"] < min_support:
        problems.append(f"support {estimate_['support']:.1%} < {min_support:.0%}: the logging "
                        "policy could not make the policy's choices")
    return problems
