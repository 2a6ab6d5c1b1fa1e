"""One simulated day of traffic, served by the product's current ranking policy.

Requests → candidate pools → the policy ranks and explores (logging exact propensities)
→ users examine positions with a position-bias curve → examined items produce graded
outcomes and rare explicit thumbs; bots produce regular, fast, targeted feedback.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from flywheel_assets.serve.serving import RankingPolicy, rank_slates
from flywheel_assets.simulation import truth
from flywheel_assets.simulation.config import WorldConfig
from flywheel_assets.simulation.engagement import slate_monotony

POOL_CHUNK = 2000
DAY_SECONDS = 86_400


@dataclass
class DayTraffic:
    impressions: pd.DataFrame
    interactions: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    # Rows of the broken client (malformed on purpose), kept apart from the good files.
    broken_impressions: list[dict] = field(default_factory=list)
    broken_interactions: list[dict] = field(default_factory=list)
    bot_user_ids: list[str] = field(default_factory=list)
    deletions: pd.DataFrame | None = None
    policy_version: str = ""
    # Every request's candidate pool with each candidate's exposure propensity (what
    # off-policy evaluation of another ranking needs); None when the product does not
    # log pools.
    candidates: pd.DataFrame | None = None
    # The requests behind the day, for the oracle: pool item indices (R×P), user
    # indices, request ids, timestamps and devices.
    requests: dict | None = None
    # Plays by item index (examined, then partly or fully watched): the world's exposure
    # feedback into tomorrow's popularity.
    item_plays: np.ndarray | None = None


def sample_pools(rng: np.random.Generator, popularity: np.ndarray, n_requests: int,
                 pool_size: int, skew: float) -> np.ndarray:
    """Candidate pools (R×P item indices) without replacement, popularity-weighted.

    Gumbel top-k sampling, in chunks so memory stays at chunk × catalogue floats; single
    precision, since 20k requests × the catalogue is the world's largest draw.
    """
    logits = (0.5 * skew * np.log(popularity.astype("float64") + 10.0)).astype(np.float32)
    out = np.empty((n_requests, pool_size), dtype=np.int64)
    tiny = np.float32(1e-12)
    for start in range(0, n_requests, POOL_CHUNK):
        stop = min(start + POOL_CHUNK, n_requests)
        uniform = rng.random((stop - start, len(logits)), dtype=np.float32)
        keys = logits - np.log(-np.log(uniform + tiny) + tiny)
        out[start:stop] = np.argpartition(-keys, pool_size - 1, axis=1)[:, :pool_size]
    return out


def sample_pools_fast(rng: np.random.Generator, popularity: np.ndarray, n_requests: int,
                      pool_size: int, skew: float) -> np.ndarray:
    """The fast path's pools: each candidate drawn by inverse CDF of the same weights,
    repeats within a pool redrawn until every pool is distinct (sequential sampling
    without replacement, as Gumbel top-k); O(R×P log N) instead of O(R×N)."""
    n_items = len(popularity)
    if pool_size > n_items:
        raise ValueError(f"pool size {pool_size} exceeds the catalogue ({n_items} items)")
    weights = np.exp(0.5 * skew * np.log(popularity.astype("float64") + 10.0))
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]

    def draw(shape):
        return np.minimum(np.searchsorted(cdf, rng.random(shape), side="right"), n_items - 1)

    out = draw((n_requests, pool_size))
    for _ in range(1000):
        order = np.argsort(out, axis=1, kind="stable")
        ranked = np.take_along_axis(out, order, axis=1)
        repeat_sorted = np.zeros(out.shape, bool)
        repeat_sorted[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
        if not repeat_sorted.any():
            return out
        repeat = np.zeros(out.shape, bool)
        np.put_along_axis(repeat, order, repeat_sorted, axis=1)
        out[repeat] = draw(int(repeat.sum()))
    # A catalogue so concentrated that redraws keep colliding: the exact method.
    return sample_pools(rng, popularity, n_requests, pool_size, skew)


def category_codes(items: pd.DataFrame, pools: np.ndarray) -> np.ndarray:
    """R×P integer codes of the pool items' categories (what diversity re-ranks on)."""
    codes, _ = pd.factorize(items["category"], sort=True)
    return codes[pools]


def candidate_frame(users: pd.DataFrame, items: pd.DataFrame, user_idx: np.ndarray,
                    pools: np.ndarray, ts: pd.Series, device: np.ndarray) -> pd.DataFrame:
    """Raw scoring rows (one per request × candidate) in the product's raw columns."""
    n_req, pool = pools.shape
    flat_items = pools.ravel()
    flat_users = np.repeat(user_idx, pool)
    frame = items.iloc[flat_items].reset_index(drop=True)
    u = users.iloc[flat_users].reset_index(drop=True)
    # The product's serving knows who asks (its profiles are keyed by the pseudonym).
    frame["user_id"] = u["user_id"].to_numpy()
    frame["country"] = u["country"].to_numpy()
    frame["age_band"] = u["age_band"].to_numpy()
    frame["signup_date"] = u["signup_date"].to_numpy()
    frame["ts"] = np.repeat(ts.to_numpy(), pool)
    frame["device"] = np.repeat(device, pool)
    # The world's own indices, for policies that score from the hidden truth (the gate
    # benchmark's); never written to landing files.
    frame["world_user"] = flat_users
    frame["world_item"] = flat_items
    return frame


def _request_schedule(config: WorldConfig, rng: np.random.Generator, pop: truth.Population,
                      day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Who asks when: human requests by activity, bots at regular intervals. In a
    responsive world people's requests scale with their activity today against the
    first day's (more satisfied users, more requests); bots' do not."""
    bot_share = config.bot_fraction * config.bot_activity
    if config.active("bot_attack", day):
        bot_share *= 4
    bot_share = min(bot_share, 0.5) if pop.is_bot.any() else 0.0
    n_bot = int(round(config.requests_per_day * bot_share))
    n_human = config.requests_per_day - n_bot
    humans = np.flatnonzero(~pop.is_bot)
    total = pop.activity[humans].sum()
    if pop.base_activity > 0:
        n_human = int(round(n_human * total / pop.base_activity))
    if total <= 0:  # everyone left: only the bots still come
        n_human = 0
    p = pop.activity[humans] / total if total > 0 else None
    human_users = rng.choice(humans, n_human, p=p) if n_human else np.empty(0, np.int64)
    human_seconds = rng.uniform(0, DAY_SECONDS - 600, n_human)
    bots = np.flatnonzero(pop.is_bot)
    if n_bot and len(bots):
        # Requests shared out evenly; each bot fires at its own fixed interval with a
        # jitter under a second: regular, machine-like.
        per_bot = np.full(len(bots), n_bot // len(bots))
        per_bot[: n_bot % len(bots)] += 1
        bot_users = np.repeat(bots, per_bot)
        order = np.concatenate([np.arange(c) for c in per_bot])
        interval = np.repeat((DAY_SECONDS - 600) / np.maximum(per_bot, 1), per_bot)
        offset = np.repeat(rng.uniform(0, 60, len(bots)), per_bot)
        bot_seconds = offset + order * interval + rng.normal(0, 0.5, n_bot).clip(-1, 1)
    else:
        bot_users, bot_seconds = np.empty(0, np.int64), np.empty(0)
    user_idx = np.concatenate([human_users, bot_users])
    seconds = np.clip(np.concatenate([human_seconds, bot_seconds]), 0, DAY_SECONDS - 600)
    is_bot_request = np.concatenate([np.zeros(n_human, bool), np.ones(len(bot_users), bool)])
    order = np.argsort(seconds, kind="stable")
    return user_idx[order], seconds[order], is_bot_request[order]


def simulate_day(config: WorldConfig, date: dt.date, policy: RankingPolicy,
                 past_plays: np.ndarray | None = None, state=None) -> DayTraffic:
    """Generate the landing data of one day, served by ``policy``; ``past_plays`` are
    the earlier days' decayed plays by item (``truth.decayed_plays``); ``state``: who
    is in the product after the day before (a responsive world, engagement.py)."""
    day = config.day_index(date)
    rng = np.random.default_rng([config.seed, 100, day])
    cat = truth.catalogue(config, day, past_plays)
    pop = truth.population(config, day, state)
    items, users = cat.items, pop.users

    user_idx, seconds, bot_req = _request_schedule(config, rng, pop, day)
    n_req = len(user_idx)
    day_start = pd.Timestamp(date, tz="UTC")
    ts = pd.Series(day_start + pd.to_timedelta(np.round(seconds, 3), unit="s"))
    device_mix = [0.8, 0.15, 0.05] if config.active("taste_drift", day) else [0.6, 0.3, 0.1]
    device = np.where(bot_req, "desktop", rng.choice(truth.DEVICES, n_req, p=device_mix))

    pools = (sample_pools_fast if config.fast else sample_pools)(
        rng, items["popularity"].to_numpy(), n_req, config.pool_size, config.popularity_skew)
    if isinstance(policy, RankingPolicy) and policy.pipeline is None:
        # Popularity needs no scoring rows: the same scores without the R×P frame.
        scores = policy.score(pd.DataFrame({"popularity": items["popularity"].to_numpy()[pools.ravel()]}))
    else:
        candidates = candidate_frame(users, items, user_idx, pools, ts, device)
        scores = policy.score(candidates)
    scores = scores.reshape(n_req, config.pool_size)
    slates = rank_slates(scores, config.slate_size, config.exploration_rate, rng,
                         categories=category_codes(items, pools),
                         popularity=items["popularity"].to_numpy()[pools],
                         reranking=config.reranking)
    shown = np.take_along_axis(pools, slates.columns, axis=1)          # R×K item indices
    k = config.slate_size
    positions = np.tile(np.arange(1, k + 1), (n_req, 1))

    # --- outcomes -------------------------------------------------------------------
    z = truth.utility(config, pop.taste[user_idx][:, None, :], cat.latent[shown],
                      cat.quality[shown])
    examination_draws = rng.random((n_req, k))
    latent_outcome = z + rng.logistic(size=z.shape)
    grade = (latent_outcome[..., None] >= truth.GRADE_THRESHOLDS).sum(axis=-1)
    examined = truth.examine(config, rng, examination_draws, grade)
    grade = truth.trusted_grade(config, rng, grade)
    explicit = rng.random((n_req, k)) < config.explicit_feedback_rate
    logged_skip = rng.random((n_req, k)) < config.skip_log_rate
    # Bots look at everything, save the ring's targets at once and skip the rest.
    bot_rows = bot_req[:, None] & np.ones((1, k), bool)
    targeted = np.isin(shown, pop.bot_targets)
    examined = np.where(bot_rows, True, examined)
    grade = np.where(bot_rows, np.where(targeted, 3, 0), grade)
    logged_skip = np.where(bot_rows, rng.random((n_req, k)) < 0.8, logged_skip)
    explicit = np.where(bot_rows, False, explicit)
    item_plays = np.bincount(shown[examined & (grade >= 1)], minlength=len(items))
    # What each request brought its user, and how monotonous its slate was (the
    # responsive world's inputs; engagement.py).
    gain = (grade * examined).sum(axis=1).astype("float64")
    seen = state.seen if state is not None else np.zeros((len(pop.activity), 0), bool)
    in_seen = shown < seen.shape[1]
    seen_before = np.zeros(shown.shape, bool)
    seen_before[in_seen] = seen[np.broadcast_to(user_idx[:, None], shown.shape)[in_seen],
                                shown[in_seen]]
    monotony = slate_monotony(shown, category_codes(items, shown), seen_before)

    request_ids = _ids(f"r{date:%Y%m%d}-", np.arange(n_req), width=7)
    impression_ids = _ids("", positions.ravel(), prefixes=np.repeat(request_ids, k), sep="-")
    imp = pd.DataFrame({
        "impression_id": impression_ids,
        "request_id": np.repeat(request_ids, k),
        "ts": np.repeat(ts.to_numpy(), k),
        "user_id": users["user_id"].to_numpy()[np.repeat(user_idx, k)],
        "item_id": items["item_id"].to_numpy()[shown.ravel()],
        "position": positions.ravel(),
        "propensity": np.round(slates.propensities.ravel(), 10),
        "policy_version": policy.version,
        "device": np.repeat(device, k),
        # The product declares its exploration: this slate was drawn at random.
        "explored": np.repeat(slates.explored, k),
    })
    interactions = _interactions(rng, imp, examined.ravel(), grade.ravel(), explicit.ravel(),
                                 logged_skip.ravel(), np.repeat(bot_req, k),
                                 items["duration_s"].to_numpy()[shown.ravel()], day_start)
    imp, interactions = _duplicates(rng, config, imp, interactions)
    deletions = pd.DataFrame({
        "user_id": users["user_id"].to_numpy()[pop.deleted_today],
        "requested_at": (day_start + pd.Timedelta(hours=23)).strftime("%Y-%m-%dT%H:%M:%SZ")})
    pool_log = pd.DataFrame({
        "request_id": np.repeat(request_ids, config.pool_size),
        "item_id": items["item_id"].to_numpy()[pools.ravel()],
        "exposure_propensity": np.round(slates.exposure.ravel(), 10),
        # Its place in the slate served without exploration (empty outside it).
        "greedy_position": pd.Series(slates.greedy_position.ravel()).where(
            lambda g: g > 0).astype("Int64"),
    }) if config.log_candidate_pools else None
    traffic = DayTraffic(impressions=imp, interactions=interactions,
                         users=users[pop.joined & ~pop.gone].reset_index(drop=True),
                         items=items,
                         bot_user_ids=list(users["user_id"].to_numpy()[pop.is_bot]),
                         policy_version=policy.version, deletions=deletions,
                         candidates=pool_log,
                         requests={"request_id": request_ids, "user_idx": user_idx,
                                   "pools": pools, "seconds": seconds, "device": device,
                                   "is_bot": bot_req, "columns": slates.columns,
                                   "gain": gain, "monotony": monotony},
                         item_plays=item_plays)
    if config.active("broken_client", day):
        _break_client(rng, config, traffic)
    return traffic


def _ids(prefix: str, numbers: np.ndarray, width: int = 0, prefixes: np.ndarray | None = None,
         sep: str = "") -> np.ndarray:
    """Vectorised ``f"{prefix}{n:0{width}d}"`` (or ``f"{prefixes[i]}{sep}{n}"``), through
    Arrow: a Python f-string per id is seconds per million."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.cast(pa.array(numbers), pa.string())
    if width:
        text = pc.utf8_lpad(text, width=width, padding="0")
    head = pa.array(prefixes, pa.string()) if prefixes is not None else pa.scalar(prefix)
    return np.asarray(pc.binary_join_element_wise(head, text, sep).to_numpy(zero_copy_only=False),
                      dtype=object).astype(str)


def _interactions(rng, imp, examined, grade, explicit, logged_skip, bot, duration, day_start):
    # Naive UTC datetime64 for vectorised arithmetic; the writer marks it UTC again.
    imp_ts = pd.to_datetime(imp["ts"], utc=True).dt.tz_localize(None).to_numpy()
    day_end = (day_start + pd.Timedelta(seconds=DAY_SECONDS - 1)).tz_localize(None).to_datetime64()
    rows = []

    def add(mask, signal, value, seconds):
        idx = np.flatnonzero(mask)
        if not len(idx):
            return
        when = imp_ts[idx] + pd.to_timedelta(np.round(seconds[idx], 3), unit="s").to_numpy()
        rows.append(pd.DataFrame({
            "event_id": np.char.add(imp["impression_id"].to_numpy()[idx].astype(str), "-" + signal),
            "impression_id": imp["impression_id"].to_numpy()[idx],
            "ts": np.minimum(when, day_end),
            "signal": signal,
            "value": np.round(value[idx], 4),
        }))

    n = len(imp)
    watch = np.where(grade >= 2, rng.uniform(0.9, 1.0, n),
                     np.where(grade == 1, rng.uniform(0.1, 0.6, n), rng.uniform(0, 0.05, n)))
    watch = np.where(bot, np.where(grade >= 2, 1.0, 0.0), watch)
    # Humans take time to watch; bots react within a second or two.
    seconds = np.where(bot, rng.uniform(0.3, 1.5, n), 2 + watch * duration)
    add(examined & (grade == 0) & logged_skip, "skip", watch, seconds)
    add(examined & (grade == 1), "partial", watch, seconds)
    add(examined & (grade >= 2), "complete", watch, seconds)
    add(examined & (grade == 3), "save", watch, seconds + 1)
    add(examined & explicit & (grade >= 2), "thumbs_up", np.full(n, np.nan), seconds + 2)
    add(examined & explicit & (grade == 0), "thumbs_down", np.full(n, np.nan), seconds + 2)
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["event_id", "impression_id", "ts", "signal", "value"])
    return out.sort_values(["ts", "event_id"], kind="stable").reset_index(drop=True)


def _duplicates(rng, config, imp, interactions):
    """Real clients double-log impressions and replay events; so does this one."""
    n_imp = int(len(imp) * config.duplicate_rate)
    n_evt = int(len(interactions) * config.duplicate_rate)
    dup_imp = imp.iloc[np.sort(rng.choice(len(imp), n_imp, replace=False))].copy()
    dup_imp["impression_id"] = dup_imp["impression_id"] + "-dup"
    replay = interactions.iloc[np.sort(rng.choice(len(interactions), n_evt, replace=False))]
    return (pd.concat([imp, dup_imp], ignore_index=True),
            pd.concat([interactions, replay], ignore_index=True))


def _iso(ts) -> str:
    return pd.Timestamp(ts).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _break_client(rng, config, traffic: DayTraffic) -> None:
    """Move a share of rows to a broken client that corrupts one field in each."""
    imp, inter = traffic.impressions, traffic.interactions
    take_imp = rng.random(len(imp)) < config.broken_client_rate
    take_int = rng.random(len(inter)) < config.broken_client_rate
    imp_faults = [("position", "first"), ("propensity", 0), ("ts", "yesterday"),
                  ("user_id", None), ("propensity", 1.7), ("__json__", None)]
    int_faults = [("signal", "tap"), ("value", -3), ("ts", "1970-01-01T00:00:00Z"),
                  ("impression_id", ""), ("__json__", None)]
    for frame, take, faults, sink in ((imp, take_imp, imp_faults, traffic.broken_impressions),
                                      (inter, take_int, int_faults, traffic.broken_interactions)):
        picked = frame[take]
        choice = rng.integers(0, len(faults), len(picked))
        for record, fault in zip(picked.to_dict("records"), choice):
            record = {k: (_iso(v) if k == "ts" else v) for k, v in record.items()}
            if isinstance(record.get("value"), float) and np.isnan(record["value"]):
                record["value"] = None
            column, bad = faults[fault]
            if column == "__json__":
                sink.append({"__raw__": '{"truncated": '})
                continue
            record[column] = bad
            sink.append(record)
    traffic.impressions = imp[~take_imp].reset_index(drop=True)
    traffic.interactions = inter[~take_int].reset_index(drop=True)
