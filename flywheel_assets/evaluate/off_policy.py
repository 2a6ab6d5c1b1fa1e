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
- **policy-aware** (products that log, per candidate, where the logging policy would
  put it: exposure plus the greedy position of an epsilon-greedy policy, so that
  P(i at j) is known for every position j): the examination propensity of item i is
  ρ_i = Σ_j P(i at j) · θ_j, and its observed reward y_i (wherever it was shown, 0
  when not shown) divided by ρ_i estimates g(i) (Oosterhuis & de Rijke, "Policy-aware
  unbiased learning to rank for top-k rankings", 2020). Dividing by μ(i) and by
  θ of the one position it was shown at (the exposure family) uses only the position
  the item happened to get; ρ_i pools the examination over every position it could
  have had, and its variance is lower in every comparison we ran (tests, `flywheel
  benchmark gate`). Its doubly robust
  form: q + (y − q · e) / ρ, with e = θ of the position i was shown at (0 when not
  shown), whose expectation is ρ; its self-normalised form divides by Σ p e / ρ.

Per term (request n, candidate j, target position k, probability p, weight w,
observation y, reward model q):

    IPS   = (1/N) Σ p c_k w y
    DR    = (1/N) Σ p c_k (q + w (y − q))
    SNIPS = Σ_k c_k (N_k / N) · Σ p w y / Σ p w        (N_k: requests valued at k)

Diagnostics: the effective sample size (Σ v)² / Σ v² of the effective weights v = p·w,
as a count and as a share of the valued impressions; the largest single weight's share
of the total; the support (the share of the policy's mass on choices the logging policy
could make: 1 under any exploration, below 1 only when the logger never explores). The
logging policy itself is valued on-policy: the logs' own mean reward.

Intervals: a Poisson bootstrap, paired (the same resamples) when two policies are
compared, that carries every source of error the estimate has:
- clustered: one weight per cluster (a user; an anonymous request is its own), since a
  user's requests are not independent;
- the examination curve's own uncertainty: each replicate uses its own bootstrap draw
  of θ̂ (`position_bias` keeps them), so an error in θ̂, which does not shrink with
  the day's traffic and biases a difference in one direction, widens the interval
  instead of hiding in it. Every estimate is linear in 1/θ (the exposure family's
  observations) or in θ (the item-position family's reward model), so a replicate
  needs a few matrix products, not a recomputation;
- a normal interval, point ± z · the bootstrap standard error: on heavy-tailed terms
  percentiles of a few hundred replicates undercover.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from scipy import sparse

from flywheel_assets.settings import POLICY_VALUES

ESTIMATORS = ("ips", "snips", "dr")
FAMILIES = ("policy-aware", "exposure", "item-position")


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
    # Bootstrap draws of the examination curve (D×len(examination)); None: θ is known.
    examination_draws: np.ndarray | None = None
    # R: each request's cluster (its user); None: every request is its own.
    cluster: np.ndarray | None = None
    # Epsilon-greedy logging, when the product logs greedy positions (policy-aware
    # family): R×P greedy position (0: outside the greedy slate), R: epsilon, and R: the
    # slate's depth min(K, P). P(i at j) = (1 − ε)[greedy(i) = j] + ε / P for j ≤ depth.
    greedy: np.ndarray | None = None
    epsilon: np.ndarray | None = None
    depth: np.ndarray | None = None

    @property
    def positions_logged(self) -> np.ndarray:
        """R×Kmax: request n logged position k."""
        k_max = int(self.imp_position.max(initial=0))
        out = np.zeros((self.n_requests, k_max), dtype=bool)
        out[self.imp_request, self.imp_position - 1] = True
        return out

    @property
    def theta(self) -> np.ndarray:
        """θ_1..θ_Kθ, Kθ covering every logged position (1 where unknown)."""
        size = int(self.imp_position.max(initial=1))
        theta = np.ones(max(size, len(self.examination) if self.examination is not None else 0))
        if self.examination is not None and len(self.examination):
            theta[:len(self.examination)] = self.examination
        return np.maximum(theta, 1e-6)

    def logged_value(self, k: int, value: str = "dcg", debias: bool = False) -> np.ndarray:
        """Per request, the logs' own (on-policy) value over positions 1..k, the ones a
        policy is valued on: Σ c_k r_k; with ``debias``, each reward divided by θ of its
        position (the exposure family's unit)."""
        return self.on_policy(k, value, debias).point()

    def on_policy(self, k: int, value: str = "dcg", debias: bool = False) -> "OnPolicy":
        """The logs' own value per request (:meth:`logged_value`), kept linear in 1/θ so
        that its interval carries θ̂'s uncertainty."""
        c = position_weights(k, value)
        inside = self.imp_position <= k
        position, r = self.imp_position[inside], self.imp_reward[inside].astype("float64")
        theta = self.theta
        const, inverse = np.zeros(self.n_requests), np.zeros((self.n_requests, len(theta)))
        if debias:
            np.add.at(inverse, (self.imp_request[inside], position - 1), c[position - 1] * r)
        else:
            const = np.bincount(self.imp_request[inside], c[position - 1] * r,
                                minlength=self.n_requests)
        return OnPolicy(const, inverse, theta, self.examination_draws, self.cluster)

    @property
    def slate_lengths(self) -> np.ndarray:
        """R: the last position each request logged."""
        out = np.zeros(self.n_requests, dtype=np.int64)
        np.maximum.at(out, self.imp_request, self.imp_position)
        return out


@dataclass(frozen=True)
class Terms:
    """One policy's estimator terms on one log, and the requests × positions valued.

    θ enters a term in one of two places, recorded so that a bootstrap replicate can use
    its own draw of θ: the exposure family divides an observation by θ of the position
    it was logged at (``observed_at``); the item-position family's reward model is the
    examined-grade model times θ of the target position (``reward_at``)."""

    request: np.ndarray
    position: np.ndarray
    coef: np.ndarray         # p · c_k
    prob: np.ndarray         # p
    weight: np.ndarray       # w
    observed: np.ndarray     # y before any division by θ
    reward_model: np.ndarray  # q before any multiplication by θ
    supported: np.ndarray    # bool: the logging policy could make this choice
    valued: np.ndarray       # R×K bool: request n valued at position k
    n_requests: int
    family: str
    theta: np.ndarray        # Kθ: the point examination curve
    observed_at: np.ndarray | None = None  # y / θ[observed_at] (0-based), exposure family
    reward_at: np.ndarray | None = None    # q · θ[reward_at] (0-based), item-position family
    examination_draws: np.ndarray | None = None
    cluster: np.ndarray | None = None
    # Policy-aware family: ρ = greedy_share · θ[greedy_at] + uniform_share · Σθ[:depth];
    # e = θ[shown_at] (shown_at = -1: not shown, e = 0).
    shown_at: np.ndarray | None = None
    greedy_at: np.ndarray | None = None
    greedy_share: np.ndarray | None = None
    uniform_share: np.ndarray | None = None
    depth: np.ndarray | None = None


@dataclass(frozen=True)
class OnPolicy:
    """The logging policy's value per request: ``const + inverse · (1/θ)``."""

    const: np.ndarray
    inverse: np.ndarray      # R×Kθ
    theta: np.ndarray
    examination_draws: np.ndarray | None = None
    cluster: np.ndarray | None = None

    def point(self) -> np.ndarray:
        return self.const + self.inverse @ (1.0 / self.theta)


def item_position_terms(log: LoggedSlates, policy: Policy, reward_model: np.ndarray,
                        k: int, value: str = "dcg", examined: bool = False) -> Terms:
    """Terms of the item-position estimators. ``reward_model``: R×P×K or R×P (the same
    estimate at every position) of the expected observed reward; with ``examined``, an
    R×P model of the grade once examined, multiplied by θ of each target position."""
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
                 q, supported, valued, log.n_requests, "item-position", log.theta,
                 reward_at=pos - 1 if examined and reward_model.ndim == 2 else None,
                 examination_draws=log.examination_draws, cluster=log.cluster)


def _within_logged_slates(log: LoggedSlates, policy: Policy, k: int, value: str):
    """The policy's choices a request can value, with c and the R×K valued mask. A
    request is valued on the positions its logged slate had (as the logs' own value
    is): a policy's item at position 8 of a 5-item slate has no observable outcome."""
    keep = policy.position <= np.minimum(k, log.slate_lengths[policy.request])
    n, j, pos, p = (a[keep] for a in (policy.request, policy.column, policy.position,
                                      policy.probability))
    valued = np.zeros((log.n_requests, k), dtype=bool)
    valued[n, pos - 1] = True
    return n, j, pos, p, position_weights(k, value), valued


def exposure_terms(log: LoggedSlates, policy: Policy, reward_model: np.ndarray,
                   shown_position: np.ndarray, grade: np.ndarray, k: int,
                   value: str = "dcg") -> Terms:
    """Terms of the exposure estimators. ``shown_position`` and ``grade``: R×P (NaN / 0
    where not shown); ``reward_model``: R×P, the expected grade once examined."""
    if log.exposure is None:
        raise ValueError("the exposure estimators need logged exposure propensities")
    n, j, pos, p, c, valued = _within_logged_slates(log, policy, k, value)
    at = shown_position[n, j]
    shown = ~np.isnan(at)
    mu = log.exposure[n, j]
    positive = np.nan_to_num(mu, nan=0.0) > 0
    weight = np.where(shown & positive, 1.0 / np.where(positive, mu, 1.0), 0.0)
    observed = np.where(shown, grade[n, j], 0.0)
    return Terms(n, pos, p * c[pos - 1], p, weight, observed, reward_model[n, j], positive,
                 valued, log.n_requests, "exposure", log.theta,
                 observed_at=np.nan_to_num(at, nan=1).astype(np.int64) - 1,
                 examination_draws=log.examination_draws, cluster=log.cluster)


def examination_propensity(theta: np.ndarray, greedy_at: np.ndarray, greedy_share: np.ndarray,
                           uniform_share: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """ρ = Σ_j P(i at j) θ_j of epsilon-greedy logging, per term (columns) and curve
    (rows of ``theta``, B×Kθ): the greedy slate's share at the greedy position, the
    uniform slate's share at each of the first ``depth`` positions."""
    theta = np.atleast_2d(theta)
    cum = np.cumsum(theta, axis=1)
    at = np.maximum(greedy_at, 0)
    greedy = np.where(greedy_at >= 0, theta[:, at], 0.0)
    return greedy * greedy_share + cum[:, np.maximum(depth, 1) - 1] * uniform_share


def policy_aware_terms(log: LoggedSlates, policy: Policy, reward_model: np.ndarray,
                       shown_position: np.ndarray, grade: np.ndarray, k: int,
                       value: str = "dcg") -> Terms:
    """Terms of the policy-aware estimators (module docstring). ``shown_position`` and
    ``grade``: R×P (NaN / 0 where not shown); ``reward_model``: R×P, the expected grade
    once examined. Needs the log's epsilon-greedy description (``greedy``)."""
    if log.greedy is None or log.epsilon is None or log.depth is None:
        raise ValueError("the policy-aware estimators need the logging policy's greedy "
                         "positions and exploration rate")
    n, j, pos, p, c, valued = _within_logged_slates(log, policy, k, value)
    at = shown_position[n, j]
    shown = ~np.isnan(at)
    shown_at = np.where(shown, np.nan_to_num(at, nan=1), 0).astype(np.int64) - 1
    greedy_at = log.greedy[n, j].astype(np.int64) - 1
    eps = log.epsilon[n]
    greedy_share, uniform_share = 1.0 - eps, eps / log.pool_sizes[n]
    depth = log.depth[n]
    theta = log.theta
    rho = examination_propensity(theta, greedy_at, greedy_share, uniform_share, depth)[0]
    e = np.where(shown, theta[np.maximum(shown_at, 0)], 0.0)
    weight = np.divide(e, rho, out=np.zeros_like(e), where=rho > 0)
    return Terms(n, pos, p * c[pos - 1], p, weight, np.where(shown, grade[n, j], 0.0),
                 reward_model[n, j], rho > 0, valued, log.n_requests, "policy-aware", theta,
                 examination_draws=log.examination_draws, cluster=log.cluster,
                 shown_at=shown_at, greedy_at=greedy_at, greedy_share=greedy_share,
                 uniform_share=uniform_share, depth=depth)


def diagnostics(terms: Terms) -> dict:
    """ESS (count and share of the valued impressions), the largest weight's share, support."""
    v = terms.prob * terms.weight
    # Both do not depend on the weights' scale: computed on v / max(v), so that a huge
    # weight (a propensity near 0) cannot overflow them; an infinite one leaves nothing.
    top = float(v.max(initial=0.0))
    if np.isfinite(top) and top > 0:
        total, squares = float((v / top).sum()), float(((v / top) ** 2).sum())
        ess, max_share = total ** 2 / squares, 1.0 / total
    else:
        ess, max_share = 0.0, 1.0
    valued = int(terms.valued.sum())
    mass = float(terms.prob.sum())
    return {"requests": terms.n_requests, "valued_impressions": valued,
            "effective_sample_size": ess, "ess_share": ess / valued if valued else 0.0,
            "max_weight_share": max_share,
            "support": float(terms.prob[terms.supported].sum()) / mass if mass else 0.0,
            "family": terms.family}


@dataclass(frozen=True)
class _Linear:
    """Per-request parts of each estimator, linear in 1/θ and in θ:
    IPS and DR per request = const + inv · (1/θ) + lin · θ; SNIPS per request and
    position: numerator = num + num_inv · (1/θ), denominator ``den``."""

    ips: tuple[np.ndarray, np.ndarray, np.ndarray]
    dr: tuple[np.ndarray, np.ndarray, np.ndarray]
    num: np.ndarray          # R×K
    num_inv: tuple           # sparse R×K×Kθ: (request, position index, θ index, value)
    den: np.ndarray          # R×K
    valued: np.ndarray       # R×K
    c: np.ndarray            # K
    theta: np.ndarray
    draws: np.ndarray | None
    cluster: np.ndarray | None


@dataclass(frozen=True)
class _Aware:
    """The policy-aware family's parts. Not linear in θ (ρ sums θ over positions and
    divides), so each replicate recomputes ρ and e from its curve; but ρ and e depend
    on a term only through its key (greedy position, slate depth, ε shares, position
    shown at, target position), of which a day with one ε and one pool size has a few
    hundred: the terms are summed per request and key once (sparse R×U), and a
    replicate costs a product with its resampling weights and U divisions. (ε varying
    by request makes U grow with R: replicates are then taken in passes of bounded
    size, slower but within memory.) The doubly robust estimator's direct part
    (Σ p c q) does not depend on θ."""

    direct: np.ndarray       # R: Σ p c_k q per request
    sums: dict               # name → sparse R×U: Σ coef·y, coef·q, p·y, p per request and key
    keys: dict               # name → U: greedy_at, depth, greedy_share, uniform_share,
    #                          shown_at, position
    valued: np.ndarray       # R×K
    c: np.ndarray            # K
    theta: np.ndarray
    draws: np.ndarray | None
    cluster: np.ndarray | None

    # Replicates × keys per pass: bounds the dense B×U arrays (a product whose ε varies
    # by request has a key per request and position).
    MAX_CELLS = 4_000_000

    def values(self, resample: np.ndarray, theta: np.ndarray, estimators) -> dict:
        step = max(1, self.MAX_CELLS // max(len(self.keys["position"]), 1))
        if len(resample) > step:
            parts = [self.values(resample[i:i + step], theta[i:i + step], estimators)
                     for i in range(0, len(resample), step)]
            return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        n, k = self.valued.shape
        total = np.maximum(resample.sum(axis=1), 1e-12)
        size = theta.shape[1]
        th = np.maximum(theta, 1e-6)
        key = self.keys
        rho = np.maximum(examination_propensity(
            th, np.minimum(key["greedy_at"], size - 1), key["greedy_share"],
            key["uniform_share"], np.minimum(key["depth"], size)), 1e-12)    # B×U
        e = th[:, np.clip(key["shown_at"], 0, size - 1)]                      # B×U
        by = {name: np.asarray((m.T @ resample.T).T) for name, m in self.sums.items()}
        out = {}
        if "ips" in estimators:
            out["ips"] = (by["coef_y"] / rho).sum(1) / total
        if "dr" in estimators:
            out["dr"] = (resample @ self.direct
                         + ((by["coef_y"] - by["coef_q"] * e) / rho).sum(1)) / total
        if "snips" in estimators:
            onehot = np.zeros((len(key["position"]), k))
            onehot[np.arange(len(key["position"])), key["position"] - 1] = 1.0
            num = (by["prob_y"] / rho) @ onehot
            den = (by["prob"] * e / rho) @ onehot
            share = (resample @ self.valued) / total[:, None]
            out["snips"] = (np.divide(num, den, out=np.zeros_like(num), where=den > 0)
                            * share * self.c).sum(axis=1)
        return out


KEY_FIELDS = ("greedy_at", "depth", "greedy_share", "uniform_share", "shown_at", "position")


def _aware(terms: Terms) -> _Aware:
    n, k = terms.n_requests, terms.valued.shape[1]
    direct = np.bincount(terms.request, terms.coef * terms.reward_model, minlength=n)
    shown = terms.shown_at >= 0
    # One integer code per key (each field factorised, then mixed radix): 1-D unique.
    code = np.zeros(int(shown.sum()), dtype=np.int64)
    levels = {}
    for f in KEY_FIELDS:
        levels[f], inverse = np.unique(np.round(np.asarray(getattr(terms, f), "float64")[shown],
                                                12), return_inverse=True)
        code = code * len(levels[f]) + inverse.ravel()
    unique, code = np.unique(code, return_inverse=True)
    code = code.ravel()
    keys, rest = {}, unique
    for f in reversed(KEY_FIELDS):
        keys[f] = levels[f][rest % len(levels[f])]
        rest = rest // len(levels[f])
    keys = {f: keys[f].astype(np.int64 if f in ("greedy_at", "depth", "shown_at", "position")
                              else "float64") for f in KEY_FIELDS}
    request = terms.request[shown]
    parts = {"coef_y": terms.coef * terms.observed, "coef_q": terms.coef * terms.reward_model,
             "prob_y": terms.prob * terms.observed, "prob": terms.prob}
    sums = {name: sparse.csr_matrix((v[shown], (request, code)), shape=(n, len(unique)))
            for name, v in parts.items()}
    return _Aware(direct, sums, keys, terms.valued.astype("float64"),
                  _coef_by_position(terms, k), terms.theta, terms.examination_draws,
                  terms.cluster)


def _linear(terms: Terms | OnPolicy | np.ndarray) -> _Linear | _Aware:
    if isinstance(terms, Terms) and terms.family == "policy-aware":
        return _aware(terms)
    if isinstance(terms, np.ndarray):
        terms = OnPolicy(np.asarray(terms, "float64"), np.zeros((len(terms), 1)), np.ones(1))
    if isinstance(terms, OnPolicy):
        n, size = len(terms.const), len(terms.theta)
        zero = np.zeros((n, size))
        part = (terms.const, terms.inverse, zero)
        rows, cols = np.nonzero(terms.inverse)
        sparse = (rows, np.zeros(len(rows), dtype=np.int64), cols, terms.inverse[rows, cols])
        return _Linear(part, part, terms.const[:, None], sparse,
                       np.ones((n, 1)), np.ones((n, 1)), np.ones(1), terms.theta,
                       terms.examination_draws, terms.cluster)
    n, k, size = terms.n_requests, terms.valued.shape[1], len(terms.theta)
    zeros_r, zeros_rt = np.zeros(n), np.zeros((n, size))
    ips_term = terms.coef * terms.weight * terms.observed
    q_term = terms.coef * terms.reward_model * (1.0 - terms.weight)
    num_term = terms.prob * terms.weight * terms.observed
    num = np.zeros((n, k))
    empty = np.zeros(0, dtype=np.int64)
    num_inv = (empty, empty, empty, np.zeros(0))
    if terms.observed_at is not None:
        ips = (zeros_r, _by_theta(terms.request, terms.observed_at, ips_term, n, size), zeros_rt)
        num_inv = (terms.request, terms.position - 1, np.clip(terms.observed_at, 0, size - 1),
                   num_term)
    else:
        ips = (np.bincount(terms.request, ips_term, minlength=n), zeros_rt, zeros_rt)
        np.add.at(num, (terms.request, terms.position - 1), num_term)
    if terms.reward_at is not None:
        dr = (ips[0], ips[1], _by_theta(terms.request, terms.reward_at, q_term, n, size))
    else:
        dr = (ips[0] + np.bincount(terms.request, q_term, minlength=n), ips[1], zeros_rt)
    den = np.zeros((n, k))
    np.add.at(den, (terms.request, terms.position - 1), terms.prob * terms.weight)
    return _Linear(ips, dr, num, num_inv, den, terms.valued.astype("float64"),
                   _coef_by_position(terms, k), terms.theta, terms.examination_draws,
                   terms.cluster)


def _by_theta(request: np.ndarray, at: np.ndarray, values: np.ndarray, n: int,
              size: int) -> np.ndarray:
    out = np.zeros((n, size))
    np.add.at(out, (request, np.clip(at, 0, size - 1)), values)
    return out


def _coef_by_position(terms: Terms, k: int) -> np.ndarray:
    """c_k (recovered from the terms' p · c_k / p)."""
    c = np.zeros(k)
    nonzero = terms.prob > 0
    c[terms.position[nonzero] - 1] = terms.coef[nonzero] / terms.prob[nonzero]
    return c


def _pad(a: np.ndarray, size: int, fill: float) -> np.ndarray:
    """θ-shaped arrays (…×Kθ) of two policies to one Kθ."""
    if a.shape[-1] >= size:
        return a
    pad = [(0, 0)] * (a.ndim - 1) + [(0, size - a.shape[-1])]
    return np.pad(a, pad, constant_values=fill)


def _values(lin: _Linear, resample: np.ndarray, theta: np.ndarray,
            estimators=ESTIMATORS) -> dict[str, np.ndarray]:
    """Estimator values under resampling weights (B×R) and curves (B×Kθ; a row of ones
    and the point curve = the estimate)."""
    if isinstance(lin, _Aware):
        return lin.values(resample, theta, estimators)
    size = theta.shape[1]
    inv, lin_theta = 1.0 / np.maximum(theta, 1e-6), theta
    total = np.maximum(resample.sum(axis=1), 1e-12)
    out = {}
    for name in ("ips", "dr"):
        if name in estimators:
            const, by_inv, by_theta = getattr(lin, name)
            out[name] = (resample @ const + ((resample @ _pad(by_inv, size, 0.0)) * inv).sum(1)
                         + ((resample @ _pad(by_theta, size, 0.0)) * lin_theta).sum(1)) / total
    if "snips" in estimators:
        n, k = lin.num.shape
        request, position, at, values = lin.num_inv
        # Sparse: a deterministic policy has at most K terms per request.
        num_inv = sparse.csr_matrix((values, (request, position * size + at)),
                                    shape=(n, k * size))
        num = resample @ lin.num + np.einsum(
            "bka,ba->bk", np.asarray((num_inv.T @ resample.T).T).reshape(-1, k, size), inv)
        den = resample @ lin.den
        share = (resample @ lin.valued) / total[:, None]
        out["snips"] = (np.divide(num, den, out=np.zeros_like(num), where=den > 0) * share
                        * lin.c).sum(axis=1)
    return out


def _replicates(lins: list[_Linear], n_boot: int, seed: int):
    """Chunks of (B×R resampling weights, B×Kθ curves): one Poisson(1) weight per
    cluster, and each replicate's own draw of θ̂ (cycled when there are fewer draws)."""
    size = max(len(lin.theta) for lin in lins)
    n = lins[0].valued.shape[0]
    cluster = next((lin.cluster for lin in lins if lin.cluster is not None), None)
    codes = (np.arange(n) if cluster is None else np.unique(cluster, return_inverse=True)[1])
    n_clusters = int(codes.max(initial=-1)) + 1
    draws = next((lin.draws for lin in lins if lin.draws is not None), None)
    point = _pad(max((lin.theta for lin in lins), key=len)[None, :], size, 1.0)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, 20_000_000 // max(n, 1)))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        weights = rng.poisson(1.0, size=(b, n_clusters)).astype("float64")[:, codes]
        if draws is not None and len(draws):
            idx = np.arange(start, start + b) % len(draws)
            curves = _pad(np.where(np.isfinite(draws[idx]), draws[idx], 1.0), size, 1.0)
        else:
            curves = np.repeat(point, b, axis=0)
        yield weights, curves


def _z(level: float) -> float:
    return NormalDist().inv_cdf(1 - (1.0 - level) / 2)


def _point(lin: _Linear, estimators, size: int) -> dict[str, float]:
    theta = _pad(lin.theta[None, :], size, 1.0)
    n = lin.valued.shape[0]
    return {k: float(v[0]) for k, v in _values(lin, np.ones((1, n)), theta, estimators).items()}


CI_METHOD = ("normal: point ± z · bootstrap standard error (Poisson bootstrap clustered by "
             "user, each replicate with its own draw of the examination curve)")


def estimate(terms: Terms | OnPolicy | np.ndarray, n_boot: int = 1000, seed: int = 0,
             level: float = 0.95, estimators=ESTIMATORS) -> dict:
    """IPS, SNIPS and DR of one policy (``Terms``; or the logs' own per-request values
    for the logging policy), each with its bootstrap interval, plus the diagnostics."""
    lin = _linear(terms)
    n = lin.valued.shape[0]
    if isinstance(terms, Terms):
        diag = diagnostics(terms)
    else:
        diag = {"requests": n, "valued_impressions": None, "effective_sample_size": float(n),
                "ess_share": 1.0, "max_weight_share": 1.0 / n if n else 1.0, "support": 1.0,
                "family": "on-policy"}
    size = len(lin.theta)
    point = _point(lin, estimators, size)
    boot = {name: [] for name in estimators}
    for weights, curves in _replicates([lin], n_boot, seed):
        for name, v in _values(lin, weights, curves, estimators).items():
            boot[name].append(v)
    out = {**diag, "level": level, "ci_method": CI_METHOD}
    for name in estimators:
        se = float(np.std(np.concatenate(boot[name]), ddof=1)) if n_boot > 1 else 0.0
        out[name] = {"value": point[name], "ci_low": point[name] - _z(level) * se,
                     "ci_high": point[name] + _z(level) * se, "se": se}
    return out


def compare(candidate: Terms | OnPolicy | np.ndarray, baseline: Terms | OnPolicy | np.ndarray,
            n_boot: int = 1000, seed: int = 0, level: float = 0.95,
            estimators=ESTIMATORS) -> dict[str, dict[str, float]]:
    """Candidate − baseline for each estimator, with a paired bootstrap interval (the
    same resamples and the same examination draws on both sides). Either side may be
    the logs' own per-request values (the logging policy, on-policy)."""
    lins = [_linear(t) for t in (candidate, baseline)]
    n = lins[0].valued.shape[0]
    if lins[1].valued.shape[0] != n:
        raise ValueError("both policies must be evaluated on the same logged requests")
    size = max(len(lin.theta) for lin in lins)
    a, b = (_point(lin, estimators, size) for lin in lins)
    boot = {name: [] for name in estimators}
    for weights, curves in _replicates(lins, n_boot, seed):
        va, vb = (_values(lin, weights, curves, estimators) for lin in lins)
        for name in estimators:
            boot[name].append(va[name] - vb[name])
    out = {}
    for name in estimators:
        delta = a[name] - b[name]
        se = float(np.std(np.concatenate(boot[name]), ddof=1)) if n_boot > 1 else 0.0
        out[name] = {"delta": delta, "ci_low": delta - _z(level) * se,
                     "ci_high": delta + _z(level) * se, "se": se, "level": level}
    return out


def trust(estimate_: dict, min_ess: float, min_ess_share: float, max_weight_share: float,
          min_support: float) -> list[str]:
    """Why an estimate cannot be trusted (empty: it can): too few effective samples, in
    count or as a share, one weight carrying too much, or choices the logs cannot show.
    With any exploration, support is 1 and the first three do the work; support is the
    guard against a logger that never explores (its estimate of another ranking sees
    only the choices the two share, and its effective sample size can still be large)."""
    problems = []
    ess, share = estimate_["effective_sample_size"], estimate_["ess_share"]
    # Written as "not within the limit": a diagnostic that is not a number (NaN) fails.
    if not ess >= min_ess:
        problems.append(f"effective sample size {ess:.0f} < {min_ess:g}")
    if not share >= min_ess_share:
        problems.append(f"effective sample size is {share:.2%} of the valued impressions "
                        f"(< {min_ess_share:.2%})")
    if not estimate_["max_weight_share"] <= max_weight_share:
        problems.append(f"one weight carries {estimate_['max_weight_share']:.1%} of the total "
                        f"(> {max_weight_share:.0%})")
    if not estimate_["support"] >= min_support:
        problems.append(f"support {estimate_['support']:.1%} < {min_support:.0%}: the logging "
                        "policy could not make the policy's choices")
    return problems
