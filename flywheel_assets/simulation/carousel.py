"""The `carousel` profile: a second product shape, so the flywheel is tested on more than
one kind of log.

A 3-slot carousel over a few dozen items (50, two new ones a day), clicks only,
anonymous requests (no user id, no users or items snapshot, no content features, no
candidate pools): the landing files carry the required columns and `policy_version`
only. Until a model of ours is promoted, the product's own logging policy serves:
Thompson sampling over items (a Beta posterior of each item's click rate from earlier
days' clicks with forgetting, position-blind as such products are), whose per-position
propensities the product estimates by Monte Carlo (as a real product logs them: a
finite number of draws, floored at one draw). A model of ours, once champion, serves
epsilon-greedy with exact propensities and declares its random slates.

Hidden truth: users with tastes (the default world's), items with latent vectors and
quality; a user clicks an examined item with probability σ(z − CLICK_THRESHOLD), and
looks at position k with probability 1/k. The oracle values every policy exactly on
the day's requests: expected clicks per request, in the unit the product's estimators
use with `evaluation.value = reward`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from flywheel_assets.serve.serving import RankingPolicy, model_policy, rank_slates
from flywheel_assets.simulation import truth
from flywheel_assets.simulation.config import WorldConfig

PROFILE = "carousel"
LOGGING_POLICY = "thompson-sampling"
CLICK_THRESHOLD = 1.5
MONTE_CARLO_DRAWS = 20_000
TS_FORGETTING = 0.1
# What a product with this shape configures (README, "Bring your own logs"): its
# vocabulary, its value, how its logging policy explores; and, since a carousel with no
# user features shows its best few items to everyone by design, the gate's concentration
# guards (set for a personalised feed) are off.
PRODUCT_SETTINGS = {"signals.grades": "click:1", "evaluation.value": "reward",
                    "curation.exploration": "non_contextual",
                    "gate.healthy_coverage": "0", "gate.healthy_exposure_gini": "1"}


def carousel_config(**changes) -> WorldConfig:
    base = dict(profile=PROFILE, n_users=5000, n_items=50, new_items_per_day=2,
                requests_per_day=10_000, slate_size=3, pool_size=0, bot_fraction=0.0,
                exploration_rate=0.1, rerank_diversity=0.0, rerank_popularity_balance=0.0,
                log_candidate_pools=False, deletion_requests_per_day=0, duplicate_rate=0.0,
                play_feedback=0.0, oracle_requests=0,
                # Anonymous requests: nobody to follow from day to day (a fixed audience).
                responsive=False)
    return WorldConfig(**{**base, **changes})


def click_probability(config: WorldConfig, taste: np.ndarray, cat: truth.Catalogue,
                      items: np.ndarray | slice = slice(None)) -> np.ndarray:
    """P(click | examined) for users (rows of ``taste``) × items."""
    z = truth.utility(config, taste[:, None, :], cat.latent[items][None, :, :],
                      cat.quality[items][None, :])
    return 1.0 / (1.0 + np.exp(-(z - CLICK_THRESHOLD)))


def _truth_dir(world: Path, date: str) -> Path:
    return world / "truth" / f"date={date}"


def posterior(world: Path, config: WorldConfig, day: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """The Thompson sampler's Beta(a, b) per item from earlier days' clicks and
    impressions, whatever the position, with forgetting (yesterday's counts weigh
    TS_FORGETTING, halving each day before): such products keep exploring."""
    a, b = np.ones(n_items), np.ones(n_items)
    for d in range(1, day):
        path = _truth_dir(world, config.date_of(d).isoformat()) / "counts.npz"
        if path.exists():
            weight = TS_FORGETTING * 0.5 ** (day - 1 - d)
            with np.load(path) as counts:
                n = len(counts["shown"])
                a[:n] += weight * counts["clicks"]
                b[:n] += weight * (counts["shown"] - counts["clicks"])
    return a, b


def thompson_slates(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, n: int,
                    k: int) -> np.ndarray:
    """``n`` slates (item indices, position order) of one posterior draw each."""
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, 5000):
        stop = min(start + 5000, n)
        draws = rng.beta(a, b, size=(stop - start, len(a)))
        out[start:stop] = np.argsort(-draws, axis=1)[:, :k]
    return out


def monte_carlo_propensities(rng: np.random.Generator, a: np.ndarray, b: np.ndarray,
                             k: int, draws: int = MONTE_CARLO_DRAWS) -> np.ndarray:
    """items × k: the share of ``draws`` posterior draws putting each item at each
    position (what the product logs as the propensity; at least one draw)."""
    slates = thompson_slates(rng, a, b, draws, k)
    counts = np.zeros((len(a), k))
    for pos in range(k):
        counts[:, pos] = np.bincount(slates[:, pos], minlength=len(a))
    return np.maximum(counts, 1.0) / draws


def _requests(config: WorldConfig, rng: np.random.Generator, pop: truth.Population):
    p = pop.activity / pop.activity.sum()
    users = rng.choice(config.n_users, config.requests_per_day, p=p)
    seconds = np.sort(rng.uniform(0, 86_400 - 600, config.requests_per_day))
    return users, seconds


def scoring_frame(items: pd.DataFrame, n_requests: int, ts: pd.Series) -> pd.DataFrame:
    """What the product knows to score a request's catalogue: the item id and the time."""
    n_items = len(items)
    return pd.DataFrame({"item_id": np.tile(items["item_id"].to_numpy(), n_requests),
                         "ts": np.repeat(ts.to_numpy(), n_items)})


def simulate_day(world: Path, landing: Path, config: WorldConfig, date: str,
                 policy: RankingPolicy) -> dict:
    """Serve one carousel day (Thompson sampling until a model of ours is champion),
    land it in the required columns, keep the truth."""
    day = config.day_index(date)
    rng = np.random.default_rng([config.seed, 300, day])
    cat, pop = truth.catalogue(config, day), truth.population(config, day)
    n_items, k = len(cat.items), config.slate_size
    users, seconds = _requests(config, rng, pop)
    n = len(users)
    day_start = pd.Timestamp(date, tz="UTC")
    ts = pd.Series(day_start + pd.to_timedelta(np.round(seconds, 3), unit="s"))
    a, b = posterior(world, config, day, n_items)
    if policy.pipeline is None:
        version, explored = LOGGING_POLICY, None
        mc = monte_carlo_propensities(np.random.default_rng([config.seed, 301, day]), a, b, k)
        shown = thompson_slates(rng, a, b, n, k)
        propensity = mc[shown, np.arange(k)[None, :]]
    else:
        version = policy.version
        scores = policy.score(scoring_frame(cat.items, n, ts)).reshape(n, n_items)
        slates = rank_slates(scores, k, config.exploration_rate, rng)
        shown, propensity, explored = slates.columns, slates.propensities, slates.explored
    theta = truth.examination_curve(config)
    p_click = click_probability(config, pop.taste[users], cat)
    examined = rng.random((n, k)) < theta[None, :]
    clicked = examined & (rng.random((n, k)) < np.take_along_axis(p_click, shown, axis=1))
    request_ids = np.array([f"c{date.replace('-', '')}-{i:06d}" for i in range(n)])
    impression_ids = np.char.add(np.repeat(request_ids, k),
                                 np.char.add("-", np.tile(np.arange(1, k + 1), n).astype(str)))
    imp = pd.DataFrame({
        "impression_id": impression_ids, "request_id": np.repeat(request_ids, k),
        "ts": np.repeat(ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").to_numpy(), k),
        "item_id": cat.items["item_id"].to_numpy()[shown.ravel()],
        "position": np.tile(np.arange(1, k + 1), n), "propensity": np.round(propensity.ravel(), 8),
        "policy_version": version})
    if explored is not None:
        imp["explored"] = np.repeat(explored, k)
    _land(landing, date, imp, clicked.ravel())
    counts_shown = np.bincount(shown.ravel(), minlength=n_items)
    counts_clicks = np.bincount(shown.ravel()[clicked.ravel()], minlength=n_items)
    out = _truth_dir(world, date)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "counts.npz", shown=counts_shown, clicks=counts_clicks)
    np.savez_compressed(out / "requests.npz", request_id=request_ids, user_idx=users,
                        seconds=seconds, shown=shown, posterior_a=a, posterior_b=b)
    (out / "day.json").write_text(json.dumps({
        "date": date, "day": day, "profile": PROFILE, "policy_version": version,
        "examination_curve": theta.tolist(), "items": n_items}, indent=2))
    return {"impressions": len(imp), "interactions": int(clicked.sum()),
            "policy_version": version, "broken_rows": 0, "bots": 0}


def _land(landing: Path, date: str, imp: pd.DataFrame, clicked: np.ndarray) -> None:
    """Impressions as CSV, clicks as JSON Lines, each published by rename, `_SUCCESS` last."""
    from flywheel_assets.ingest.load import SUCCESS_MARKER
    from flywheel_assets.simulation.landing_writer import day_dir, publish

    imp_dir, int_dir = day_dir(landing, "impressions", date), day_dir(landing, "interactions", date)
    tmp = imp_dir / ".tmp-impressions.csv"
    imp.to_csv(tmp, index=False)
    publish(tmp)
    clicks = imp.loc[clicked, ["impression_id", "ts"]]
    tmp = int_dir / ".tmp-clicks.jsonl"
    with open(tmp, "w") as fh:
        for impression, ts in clicks.itertuples(index=False):
            fh.write(json.dumps({"event_id": f"{impression}-click", "impression_id": impression,
                                 "ts": ts, "signal": "click"}) + "\n")
    publish(tmp)
    for folder in (imp_dir, int_dir):
        (folder / SUCCESS_MARKER).touch()


def true_values(world: Path, config: WorldConfig, date: str,
                policies: dict[str, RankingPolicy]) -> dict[str, float]:
    """Expected clicks per request of each policy on the day's requests (their hidden
    users and times): ``logging`` (what served the day, exploration included),
    ``thompson`` (the product's sampler of the day), ``uniform``, and each model in
    ``policies`` served greedily (exploration aside, as the product values it)."""
    day = config.day_index(date)
    cat, pop = truth.catalogue(config, day), truth.population(config, day)
    with np.load(_truth_dir(world, date) / "requests.npz") as req:
        users, seconds = req["user_idx"], req["seconds"]
        a, b = req["posterior_a"], req["posterior_b"]
    served = json.loads((_truth_dir(world, date) / "day.json").read_text())["policy_version"]
    k, theta = config.slate_size, truth.examination_curve(config)
    p_click = click_probability(config, pop.taste[users], cat)            # R × items
    n = len(users)
    ts = pd.Series(pd.Timestamp(date, tz="UTC") + pd.to_timedelta(np.round(seconds, 3), unit="s"))
    mc = monte_carlo_propensities(np.random.default_rng([config.seed, 302, day]), a, b, k,
                                  draws=100_000)
    out = {"uniform": float((p_click.mean(axis=1)[:, None] * theta).sum(axis=1).mean()),
           "thompson": float((p_click @ mc @ theta).mean())}
    for name, policy in policies.items():
        if policy is None or policy.pipeline is None:
            continue
        scores = policy.score(scoring_frame(cat.items, n, ts)).reshape(n, len(cat.items))
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out[name] = float((np.take_along_axis(p_click, top, axis=1) * theta).sum(axis=1).mean())
    eps = config.exploration_rate
    out["logging"] = (out["thompson"] if served == LOGGING_POLICY else
                      (1 - eps) * out.get("served", np.nan) + eps * out["uniform"])
    return out


def oracle_day(world: Path, settings, config: WorldConfig, date: str,
               champion: RankingPolicy) -> dict:
    """Every policy's true value on the day, beside the product's estimates of them."""
    from flywheel_assets import warehouse
    from flywheel_assets.evaluate.evaluation import read_evaluation

    with warehouse.connect(settings.warehouse) as conn:
        record = read_evaluation(conn, date) or {}
    served = json.loads((_truth_dir(world, date) / "day.json").read_text())["policy_version"]
    policies = {"champion": champion}
    for name in ("candidate_version", "champion_version"):
        version = record.get(name)
        if version:
            policies[name.removesuffix("_version") + "_evaluated"] = model_policy(settings, version)
    if served != LOGGING_POLICY:
        policies["served"] = model_policy(settings, served)
    values = true_values(world, config, date, policies)
    in_service = champion.version if champion.pipeline is not None else LOGGING_POLICY
    out = {"date": date, "served_by": served, "champion_version": in_service,
           "candidate_version": record.get("candidate_version"),
           "compared_with": record.get("champion_version") or "incumbent",
           **{f"true_value_{name}": v for name, v in values.items()}}
    ope = (record.get("off_policy") or {}).get("policies", {})
    for name in ("logging", "uniform", "candidate", "champion"):
        if name in ope:
            p = ope[name]
            truth_key = {"candidate": "candidate_evaluated", "champion": "champion_evaluated"
                         }.get(name, name)
            true = values.get(truth_key)
            out[f"estimate_{name}"] = {
                "snips": p["snips"]["value"], "dr": p["dr"]["value"],
                "ess": p["effective_sample_size"], "trusted": p["trusted"],
                "untrusted_because": p["untrusted_because"], "truth": true,
                **({f"rel_error_{e}": abs(p[e]["value"] - true) / true for e in ("snips", "dr")}
                   if true else {})}
    return out
