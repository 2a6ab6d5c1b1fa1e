"""What would policy P have done on day D? Every policy valued off-policy on the same
logged requests, each estimate with its interval, diagnostics and a trust verdict.

Policies: ``logging`` (the policy that produced the logs, valued on-policy: the logs'
own mean reward), ``uniform`` (a uniformly random slate from each pool), ``popularity``
(the no-learning baseline), and any model (``candidate``, ``champion`` or a version), as
`serving` serves it (re-ranked, exploration aside). The estimator family (exposure or
item-position) follows what the product logs (`logged_pools`); the reward model of the
doubly robust estimator is fitted on the day's logs, cross-fitted and shared by every
policy (`reward_model`). An estimate whose effective
sample size, largest weight or support is outside the limits (`evaluation.*`) is marked
untrustworthy, with its reasons, and the gate does not decide on it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from flywheel_assets.evaluate import metrics
from flywheel_assets.evaluate import off_policy as op
from flywheel_assets.evaluate import reward_model as rm
from flywheel_assets.evaluate.logged_pools import LoggedDay, slates
from flywheel_assets.serve.serving import PLAIN_TOP_K, Reranking
from flywheel_assets.train import features as feats
from flywheel_assets.train import model as model_lib

# Uniform policies put every candidate at every position: beyond this many terms
# (requests × pool × K) they are not valued, to bound memory.
MAX_UNIFORM_TERMS = 3_000_000


@dataclasses.dataclass(frozen=True)
class TrustLimits:
    min_effective_sample_size: float = 200.0
    min_ess_share: float = 0.01
    max_weight_share: float = 0.05
    min_support: float = 0.99


def examination_array(examination: dict[int, float], size: int) -> np.ndarray:
    """θ_1..θ_size from `position_bias` (1 where a position has no estimate)."""
    theta = np.ones(size)
    for position, value in examination.items():
        if 1 <= int(position) <= size and value and np.isfinite(value):
            theta[int(position) - 1] = float(value)
    return theta


# A bootstrap draw of θ below this share of the point estimate is a degenerate resample
# (a position with a handful of interactions), not a plausible curve.
MIN_DRAW_SHARE = 0.1


def _draws(draws: np.ndarray | None, theta: np.ndarray,
           examination: dict[int, float]) -> np.ndarray | None:
    """The curve's bootstrap draws as D×len(theta), by the same rule as the point: 1
    where the point has no estimate (beyond the positions it covers, or not positive),
    floored at MIN_DRAW_SHARE × the point elsewhere."""
    if draws is None or not draws.size:
        return None
    known = np.array([bool(examination.get(k)) and np.isfinite(examination.get(k) or np.nan)
                      and k <= draws.shape[1] for k in range(1, len(theta) + 1)])
    out = np.ones((draws.shape[0], len(theta)))
    width = min(len(theta), draws.shape[1])
    out[:, :width] = np.nan_to_num(draws[:, :width], nan=1.0)
    out[:, ~known] = 1.0
    return np.where(known[None, :], np.maximum(out, MIN_DRAW_SHARE * theta[None, :]), out)


def _exposure_stats(items: np.ndarray, catalogue_size: int) -> dict:
    """Exposure Gini (over the whole catalogue, items never shown included) and
    catalogue coverage of the items a policy showed."""
    top, counts = np.unique(items.astype(str), return_counts=True)
    exposures = np.concatenate([counts, np.zeros(max(catalogue_size - len(top), 0))])
    return {"exposure_gini": metrics.exposure_gini(exposures),
            "catalog_coverage": len(top) / catalogue_size if catalogue_size else 0.0}


def _slate_items(day: LoggedDay, chosen: np.ndarray) -> np.ndarray:
    """The item ids of a deterministic policy's slates (R×K pool columns, -1 empty)."""
    rows = np.repeat(np.arange(chosen.shape[0]), chosen.shape[1])
    cols = chosen.ravel()
    return day.log.pool_items[rows[cols >= 0], cols[cols >= 0]]


def value_policies(day: LoggedDay, models: dict[str, object], k: int, value: str,
                   examination: dict[int, float], catalogue_size: int,
                   limits: TrustLimits = TrustLimits(), n_boot: int = 200,
                   level: float = 0.95, reranking: Reranking = PLAIN_TOP_K,
                   baseline: np.ndarray | None = None, uniform: bool = True,
                   examination_draws: np.ndarray | None = None,
                   scores: dict[str, np.ndarray] | None = None,
                   contenders: tuple[str, ...] = ("candidate",),
                   reward_model: str | tuple = "cross-fitted", family: str | None = None,
                   levels: bool = True) -> dict:
    """Every policy's estimates on ``day``; with a ``candidate`` among ``models``, its
    paired differences with the champion and with the logging policy; each of the
    ``contenders`` (models or scored policies) is compared with the champion too
    (``differences``). ``scores``: R×P score matrices of policies scored elsewhere,
    valued like models (the gate benchmark's policies, which score from the world's
    truth). The doubly robust estimator's reward model, shared by every policy, is
    ``cross-fitted`` (`reward_model`), the named policy's scores, or what
    :func:`shared_reward_model` returned (made once for several calls). ``family``: value
    with another family than the day's (``exposure`` on a policy-aware day), to compare
    their variance. ``levels=False``: the differences only (no policy's own value)."""
    log = day.log
    family = family or day.family
    if family not in (day.family, "exposure") or (family == "exposure" and log.exposure is None):
        raise ValueError(f"a {day.family} day cannot be valued by the {family} estimators")
    theta = day_curve(day, examination, k)
    log = dataclasses.replace(log, examination=theta,
                              examination_draws=_draws(examination_draws, theta,
                                                                       examination))
    derived = feats.derive(day.pools) if models else None
    scores = dict(scores or {}) | {name: day.matrix(model_lib.score(pipe, day.pools, derived))
                                   for name, pipe in models.items()}
    if isinstance(reward_model, tuple):
        grade_model, model_info = reward_model
    elif reward_model == "cross-fitted":
        grade_model, model_info = shared_reward_model(day, scores, examination, k)
    else:
        grade_model = scores.get(reward_model, np.zeros(day.row_index.shape))
        model_info = {"kind": f"the {reward_model} policy's scores"}
    grade_model = np.nan_to_num(grade_model)

    def terms(policy: op.Policy) -> op.Terms:
        if family == "policy-aware":
            return op.policy_aware_terms(log, policy, grade_model, day.shown_position,
                                         day.grade, k, value)
        if family == "exposure":
            return op.exposure_terms(log, policy, grade_model, day.shown_position, day.grade,
                                     k, value)
        return op.item_position_terms(log, policy, grade_model, k, value, examined=True)

    ranked = dict(scores)
    if baseline is not None:
        ranked["popularity"] = baseline
    policies: dict[str, op.Policy] = {}
    stats: dict[str, dict] = {}
    for name, s in ranked.items():
        chosen = slates(day, s, k, reranking)
        policies[name] = op.Policy.deterministic(chosen)
        stats[name] = _exposure_stats(_slate_items(day, chosen), catalogue_size)
    out: dict = {"family": family, "family_note": day.family_note, "reward_model": model_info,
                 "pool_source": day.pool_source, "value": value, "k": k,
                 "requests": log.n_requests, "pool_rows": len(day.pools),
                 "skipped": day.skipped, "diversity": reranking.diversity,
                 "popularity_balance": reranking.popularity_balance,
                 "trust_limits": dataclasses.asdict(limits), "policies": {}}
    if uniform:
        size = int(log.pool_sizes.sum()) * k
        if size <= MAX_UNIFORM_TERMS:
            policies["uniform"] = op.Policy.uniform(log.pool_sizes, k)
        else:
            out["not_valued"] = {"uniform": f"{size} terms > {MAX_UNIFORM_TERMS}"}
    logged = log.on_policy(k, value, debias=family != "item-position")
    all_terms = {name: terms(p) for name, p in policies.items()}
    if levels:
        out["policies"]["logging"] = {
            **_verdict(op.estimate(logged, n_boot, level=level), limits),
            **_exposure_stats(log.pool_items[log.imp_request, log.imp_column], catalogue_size)}
        for name, t in all_terms.items():
            out["policies"][name] = {**_verdict(op.estimate(t, n_boot, level=level), limits),
                                     **stats.get(name, {})}
    if "champion" in all_terms:
        # Every contender against the champion, on the same resamples.
        out["differences"] = {name: op.compare(all_terms[name], all_terms["champion"], n_boot,
                                               level=level)
                              for name in contenders if name in all_terms}
        if "candidate" in out["differences"]:
            out["difference"] = out["differences"]["candidate"]
    else:
        # Before any champion of ours: every contender against the incumbent.
        out["differences_versus_logging"] = {
            name: op.compare(all_terms[name], logged, n_boot, level=level)
            for name in contenders if name in all_terms}
    if "candidate" in all_terms:
        out["versus_logging"] = (out.get("differences_versus_logging", {}).get("candidate")
                                 or op.compare(all_terms["candidate"], logged, n_boot,
                                               level=level))
    return out


def day_curve(day: LoggedDay, examination: dict[int, float], k: int) -> np.ndarray:
    """θ over every position the day's valuation uses: 1..max(K, the last logged)."""
    return examination_array(examination, max(k, int(day.log.imp_position.max(initial=1))))


def shared_reward_model(day: LoggedDay, scores: dict[str, np.ndarray],
                        examination: dict[int, float], k: int) -> tuple[np.ndarray, dict]:
    """The doubly robust reward model every policy of the day shares (`reward_model`):
    R×P predicted grades once examined, from every policy's scores, and how it was made."""
    x = rm.features(scores, day.popularity, day.row_index.shape)
    return rm.cross_fitted(x, day.shown_position, day.grade, day_curve(day, examination, k),
                           day.log.cluster)


def _verdict(estimate: dict, limits: TrustLimits) -> dict:
    problems = ([] if estimate["family"] == "on-policy" else
                op.trust(estimate, limits.min_effective_sample_size, limits.min_ess_share,
                         limits.max_weight_share, limits.min_support))
    return {**estimate, "trusted": not problems, "untrusted_because": problems}


def table_markdown(ope: dict, estimator: str = "dr") -> str:
    """One row per policy: each estimate with its interval, ESS and the trust verdict."""
    unit = "DCG@K" if ope["value"] == "dcg" else "reward per request"
    lines = [f"{unit} (K = {ope['k']}), {ope['family']} estimators on {ope['requests']} "
             f"requests ({ope['pool_source']}):", "",
             "| policy | IPS | SNIPS | DR | ESS | max weight | support | trust |",
             "|---|---|---|---|---|---|---|---|"]
    for name, p in ope["policies"].items():
        cells = [f"{p[e]['value']:.4f} [{p[e]['ci_low']:.4f}, {p[e]['ci_high']:.4f}]"
                 for e in op.ESTIMATORS]
        verdict = "yes" if p["trusted"] else "NO: " + "; ".join(p["untrusted_because"])
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {p['effective_sample_size']:.0f} ({p['ess_share']:.1%}) "
                     f"| {p['max_weight_share']:.2%} | {p['support']:.1%} | {verdict} |")
    for name, why in ope.get("not_valued", {}).items():
        lines.append(f"| {name} | not valued: {why} | | | | | | |")
    if ope.get("skipped"):
        lines += ["", "Requests not valued: " + ", ".join(f"{n} {why}" for why, n in
                                                           ope["skipped"].items())]
    return "\n".join(lines)
