"""The world's hidden truth: users' tastes, items' latent vectors and quality, bots.

Everything is a deterministic function of the seed and the day, built in independent
seeded blocks, so day 9 of a run is the same whether or not days 1-8 ran in the same
process; the one exception is popularity, which also counts the plays earlier days
served (``past_plays``, kept by ``world.py``). Pipeline code never sees this module's
outputs except through landing files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from flywheel_assets.simulation.config import WorldConfig

COUNTRIES = ("DE", "FR", "GB", "US", "BR", "IN", "JP", "NG")
AGE_BANDS = ("13-17", "18-24", "25-34", "35-54", "55+")
DEVICES = ("mobile", "desktop", "tv")
# Grade thresholds of the ordinal outcome model: grade >= g when z + noise >= t_g.
GRADE_THRESHOLDS = np.array([0.0, 1.5, 3.0])
TASTE_WEIGHT = 1.2
QUALITY_WEIGHT = 0.8
BIAS = -0.8


def _rng(config: WorldConfig, *key: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, *key])


@dataclass
class Catalogue:
    items: pd.DataFrame      # observable attributes, as the product's items snapshot
    latent: np.ndarray       # n×d hidden taste vectors
    quality: np.ndarray      # n hidden quality


@dataclass
class Population:
    users: pd.DataFrame      # observable attributes of users still in the product
    taste: np.ndarray        # n×d hidden preferences
    activity: np.ndarray     # n relative request rates
    is_bot: np.ndarray       # n bool
    bot_targets: np.ndarray  # item indices the bot ring pushes
    deleted_today: np.ndarray  # indices of users who ask for erasure today
    gone: np.ndarray         # bool: users who asked for erasure before today
    joined: np.ndarray | None = None  # bool: in the product today (responsive world)
    # Summed request rate of the first n_users' humans, before any response to quality:
    # the day's requests scale with today's human activity over this.
    base_activity: float = 0.0


def _centres(config: WorldConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = _rng(config, 0)
    d = config.latent_dim
    return (rng.normal(0, 1.0, (config.n_categories, d)),
            rng.normal(0, 0.8, (len(COUNTRIES), d)),
            rng.normal(0, 0.4, (len(AGE_BANDS), d)))


def _item_block(config: WorldConfig, n: int, key: tuple[int, ...], published: np.ndarray,
                popularity_scale: float) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = _rng(config, *key)
    cat_centres, _, _ = _centres(config)
    weights = rng.dirichlet(np.full(config.n_categories, 2.0))
    category = rng.choice(config.n_categories, n, p=weights)
    latent = cat_centres[category] + rng.normal(0, 0.6, (n, config.latent_dim))
    quality = rng.normal(0, 1, n)
    content = latent[:, :6] + rng.normal(0, 0.3, (n, 6))
    hype = config.popularity_skew * (0.8 * quality + 0.6 * rng.normal(0, 1, n))
    popularity = np.round(popularity_scale * np.exp(hype)).astype("int64")
    frame = pd.DataFrame({
        "category": [f"cat_{c:02d}" for c in category],
        "published_date": published,
        "duration_s": np.round(np.exp(rng.normal(5.5, 0.6, n)), 1),
        "popularity": popularity,
        **{f"c{i}": np.round(content[:, i], 5) for i in range(6)},
    })
    return frame, latent, quality


def catalogue(config: WorldConfig, day: int, past_plays: np.ndarray | None = None) -> Catalogue:
    """Every item published on or before ``day`` (base catalogue, daily news, drops).

    An item's popularity is its outside popularity (from before the product, fixed)
    plus ``play_feedback`` × its decayed plays in the product before ``day``
    (``past_plays``, by item index; shorter than the catalogue when items are new).
    """
    start = np.datetime64(config.start_date, "D")
    rng = _rng(config, 1, 0)
    age = rng.integers(1, 700, config.n_items)
    blocks = [_item_block(config, config.n_items, (1, 1), start - age, 40.0)]
    for d in range(1, day + 1):
        published = np.full(config.new_items_per_day, start + (d - 1))
        if config.new_items_per_day:
            blocks.append(_item_block(config, config.new_items_per_day, (2, d), published, 2.0))
        if any(s.name == "catalog_drop" and s.first_day == d for s in config.scenarios):
            dropped = np.full(config.catalog_drop_size, start + (d - 1))
            blocks.append(_item_block(config, config.catalog_drop_size, (3, d), dropped, 2.0))
    items = pd.concat([b[0] for b in blocks], ignore_index=True)
    items.insert(0, "item_id", [f"item_{i:06d}" for i in range(len(items))])
    items["published_date"] = pd.to_datetime(items["published_date"])
    if past_plays is not None and config.play_feedback:
        boost = np.zeros(len(items))
        boost[: len(past_plays)] = past_plays
        items["popularity"] += np.round(config.play_feedback * boost).astype("int64")
    return Catalogue(items=items, latent=np.vstack([b[1] for b in blocks]),
                     quality=np.concatenate([b[2] for b in blocks]))


def decayed_plays(daily_plays: dict[int, np.ndarray], config: WorldConfig,
                  day: int) -> np.ndarray:
    """Plays before ``day`` by item index, each day's weighted 0.5^(age / half-life)
    with yesterday's at full weight (``daily_plays``: day → plays by item index)."""
    size = max((len(p) for d, p in daily_plays.items() if d < day), default=0)
    out = np.zeros(size)
    for d, plays in daily_plays.items():
        if d < day:
            out[: len(plays)] += plays * 0.5 ** ((day - 1 - d) / config.popularity_half_life_days)
    return out


def _people(config: WorldConfig, rng: np.random.Generator, n: int):
    """``n`` people's country and age-band codes, taste noise, request rate and
    training consent, drawn in this order."""
    country = rng.choice(len(COUNTRIES), n, p=[.14, .12, .12, .2, .12, .15, .08, .07])
    age = rng.choice(len(AGE_BANDS), n, p=[.08, .25, .3, .27, .1])
    noise = rng.normal(0, 0.5, (n, config.latent_dim))
    activity = np.exp(rng.normal(0, 1.0, n))
    consent = rng.random(n) < config.consent_rate
    return country, age, noise, activity, consent


def population(config: WorldConfig, day: int, state=None) -> Population:
    """Users with their hidden tastes as of ``day`` (after any taste drift); in a
    responsive world (``config.responsive``), the reserve of users who may join later
    too, and, given the ``state`` after the day before (simulation/engagement.py), who
    is in the product and how active they now are."""
    rng = _rng(config, 4)
    _, country_means, age_means = _centres(config)
    n = config.n_users
    country, age, noise, activity, consent = _people(config, rng, n)
    signup = np.datetime64(config.start_date, "D") - rng.integers(1, 1500, n)
    is_bot = np.zeros(n, bool)
    is_bot[rng.permutation(n)[: int(round(config.bot_fraction * n))]] = True
    bot_targets = rng.choice(config.n_items, 5, replace=False)
    drift_day = min((s.first_day for s in config.scenarios if s.name == "taste_drift"),
                    default=None)
    if drift_day is not None and day >= drift_day:
        # Tastes move: every country takes on another country's preferences.
        country_means = country_means[_rng(config, 5).permutation(len(COUNTRIES))]
    taste = country_means[country] + age_means[age] + noise
    users = pd.DataFrame({
        "user_id": [f"user_{i:06d}" for i in range(n)],
        "country": [COUNTRIES[c] for c in country],
        "age_band": [AGE_BANDS[a] for a in age],
        "signup_date": pd.to_datetime(signup),
        "consent_training": consent,
    })
    deletions = [_rng(config, 6, d).choice(np.flatnonzero(~is_bot),
                                           config.deletion_requests_per_day, replace=False)
                 for d in range(1, day + 1)] if config.deletion_requests_per_day else []
    gone = np.zeros(n, bool)
    for earlier in deletions[:-1]:
        gone[earlier] = True
    # Someone who already left cannot ask again: today's requests are new users only.
    deleted_today = np.setdiff1d(deletions[-1], np.flatnonzero(gone)) if deletions else np.empty(0, int)
    activity = np.where(gone, 0.0, activity)
    base_activity = float(activity[~is_bot].sum())
    reserve = config.reserve_users if config.responsive else 0
    if reserve:
        # Users who may join later (simulation/engagement.py), drawn like the others in
        # a block of their own: the first n_users are the same with or without them.
        r_country, r_age, r_noise, r_activity, r_consent = _people(config, _rng(config, 4, 1),
                                                                   reserve)
        join_day = state.join_day[n:] if state is not None else np.zeros(reserve, np.int64)
        r_signup = np.datetime64(config.start_date, "D") + np.maximum(join_day - 1, 0)
        users = pd.concat([users, pd.DataFrame({
            "user_id": [f"user_{i:06d}" for i in range(n, n + reserve)],
            "country": [COUNTRIES[c] for c in r_country],
            "age_band": [AGE_BANDS[a] for a in r_age],
            "signup_date": pd.to_datetime(r_signup), "consent_training": r_consent})],
            ignore_index=True)
        taste = np.vstack([taste, country_means[r_country] + age_means[r_age] + r_noise])
        activity = np.concatenate([activity, r_activity])
        is_bot = np.concatenate([is_bot, np.zeros(reserve, bool)])
        gone = np.concatenate([gone, np.zeros(reserve, bool)])
    joined = np.arange(len(activity)) < n
    if state is not None and config.responsive:
        joined = state.joined & ~gone
        # Bots do not respond to quality; people do, and churned users stay away.
        factor = state.factor(config)
        activity = np.where(is_bot, activity, activity * factor)
    activity = np.where(joined, activity, 0.0)
    return Population(users=users, taste=taste, activity=activity,
                      is_bot=is_bot, bot_targets=bot_targets, deleted_today=deleted_today,
                      gone=gone, joined=joined, base_activity=base_activity)


def utility(config: WorldConfig, taste: np.ndarray, latent: np.ndarray,
            quality: np.ndarray) -> np.ndarray:
    """The latent utility z of a user for an item (broadcasts over leading axes)."""
    affinity = np.einsum("...d,...d->...", taste, latent) / np.sqrt(config.latent_dim)
    return TASTE_WEIGHT * affinity + QUALITY_WEIGHT * quality + BIAS


def expected_grade(z: np.ndarray) -> np.ndarray:
    """E[grade | examined] under the ordinal logistic model: sum_g P(grade >= g)."""
    return (1.0 / (1.0 + np.exp(-(z[..., None] - GRADE_THRESHOLDS)))).sum(axis=-1)


def expected_logged_grade(z: np.ndarray, explicit_rate: float) -> np.ndarray:
    """E[the grade the product's signal hierarchy reads | examined]: the grade, except
    that a complete (grade 2) with an explicit thumbs up reads as 3."""
    above = 1.0 / (1.0 + np.exp(-(z[..., None] - GRADE_THRESHOLDS)))
    return above.sum(axis=-1) + explicit_rate * (above[..., 1] - above[..., 2])


def examination_curve(config: WorldConfig) -> np.ndarray:
    """P(examined | position k) for k = 1..slate size (under the position model; under
    the cascade model, the probability of going on to k when nothing above satisfied)."""
    return config.examination_top * np.arange(1, config.slate_size + 1) ** -config.position_bias_exponent


def examine(config: WorldConfig, rng: np.random.Generator, draws: np.ndarray,
            grade: np.ndarray) -> np.ndarray:
    """R×K: which shown items were examined (``draws``: R×K uniforms), given the grade
    each would get once looked at (``config.examination_model``). The position model
    draws nothing more from ``rng``, so the default world's traffic does not change."""
    n, k = grade.shape
    theta = examination_curve(config)[:k]
    if config.examination_model == "position":
        return draws < theta[None, :]
    # Cascade: go on from k-1 to k with probability θ_k / θ_{k-1}, and stop after a
    # satisfying item with probability cascade_stop.
    stop = rng.random((n, k)) < config.cascade_stop
    examined = np.zeros((n, k), dtype=bool)
    going = draws[:, 0] < theta[0]
    for position in range(k):
        if position:
            going &= draws[:, position] < theta[position] / theta[position - 1]
        examined[:, position] = going
        going &= ~((grade[:, position] >= 2) & stop[:, position])
    return examined


def trusted_grade(config: WorldConfig, rng: np.random.Generator, grade: np.ndarray) -> np.ndarray:
    """The grade as logged when users trust the ranking: a rejection (0) at position k
    reads as a partial play (1) with probability ``trust_bias`` × θ_k."""
    if not config.trust_bias:
        return grade
    theta = examination_curve(config)[:grade.shape[1]]
    flip = (grade == 0) & (rng.random(grade.shape) < config.trust_bias * theta[None, :])
    return np.where(flip, 1, grade)
