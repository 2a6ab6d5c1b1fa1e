"""Users who respond to what they are served: the world's dQ/dt = f(Q, D(U(Q), t)).

Each human user carries a satisfaction, an exponential moving average (weight
``satisfaction_memory`` on the latest day they came) that starts at
``neutral_satisfaction``. A day's satisfaction is what their requests brought them (the
summed grade of what they examined) over ``reference_gain``, less ``monotony_weight`` ×
how monotonous their slates were (the share of a slate in its most common category and
the share of items they had been shown on an earlier day, averaged). Both references
are constants of the world, the same whatever policy serves it. Tomorrow:

- a user's requests scale by exp(``activity_sensitivity`` × (satisfaction −
  ``neutral_satisfaction``)), clipped to [0.2, 3]: better service, more visits;
- a user below ``churn_below`` × the neutral level leaves with probability
  ``churn_rate``;
- new users join from a reserve (``reserve_users``, drawn like the others) at
  ``arrivals_per_day`` × ``n_users`` × the same factor for the average user: word of
  mouth follows satisfaction.

So a better model brings more requests (more data), and a narrowing loop, whose slates
repeat the same categories and items, loses users. The state after each day is kept in
the world's truth (``state.npz``), beside the rest of the day's hidden truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flywheel_assets.simulation.config import WorldConfig

STATE_FILE = "state.npz"
MIN_FACTOR, MAX_FACTOR = 0.2, 3.0


@dataclass
class UserState:
    """Who is in the product after a day, and how satisfied (by user index of the
    population, reserve included)."""

    joined: np.ndarray          # bool: in the product
    join_day: np.ndarray        # int: the day a reserve user joined (0: from the start)
    churned: np.ndarray         # bool: left for good
    satisfaction: np.ndarray    # float: moving average
    seen: np.ndarray            # bool users × items: shown to them on some earlier day

    def factor(self, config: WorldConfig) -> np.ndarray:
        """Each user's activity factor for the next day (0 for users not in it)."""
        out = np.clip(np.exp(config.activity_sensitivity
                             * (self.satisfaction - config.neutral_satisfaction)),
                      MIN_FACTOR, MAX_FACTOR)
        return np.where(self.joined & ~self.churned, out, 0.0)


def initial_state(config: WorldConfig) -> UserState:
    total = config.n_users + config.reserve_users
    joined = np.arange(total) < config.n_users
    return UserState(joined=joined, join_day=np.zeros(total, np.int64),
                     churned=np.zeros(total, bool),
                     satisfaction=np.full(total, config.neutral_satisfaction),
                     seen=np.zeros((total, 0), bool))


def slate_monotony(shown: np.ndarray, categories: np.ndarray, seen_before: np.ndarray) -> np.ndarray:
    """Per request (R×K slates): half the share of the slate in its most common
    category, half the share of items the user had already been shown."""
    k = shown.shape[1]
    same = (categories[:, :, None] == categories[:, None, :]).sum(axis=2).max(axis=1) / k
    return 0.5 * same + 0.5 * seen_before.mean(axis=1)


def next_state(config: WorldConfig, state: UserState | None, day: int, user_idx: np.ndarray,
               is_bot_request: np.ndarray, shown: np.ndarray, gain: np.ndarray,
               monotony: np.ndarray, n_items: int) -> tuple[UserState, dict]:
    """The state after ``day`` from the day's human requests (their users, slates,
    summed grade and monotony), and the day's figures."""
    state = state or initial_state(config)
    rng = np.random.default_rng([config.seed, 300, day])
    total = len(state.joined)
    human = ~is_bot_request
    users, g, mono = user_idx[human], gain[human], monotony[human]
    today = g / config.reference_gain - config.monotony_weight * mono
    requests = np.bincount(users, minlength=total)
    came = requests > 0
    per_user = np.full(total, np.nan)
    per_user[came] = np.bincount(users, today, total)[came] / requests[came]
    memory = config.satisfaction_memory
    satisfaction = np.where(came, (1 - memory) * state.satisfaction + memory * per_user,
                            state.satisfaction)
    reference = config.neutral_satisfaction
    churned = state.churned.copy()
    at_risk = came & (satisfaction < config.churn_below * reference) & ~churned
    leaving = at_risk & (rng.random(total) < config.churn_rate)
    churned |= leaving
    active = state.joined & ~churned
    mean_s = float(satisfaction[active].mean()) if active.any() else reference
    word_of_mouth = float(np.clip(np.exp(config.activity_sensitivity * (mean_s - reference)),
                                  MIN_FACTOR, MAX_FACTOR))
    n_new = int(rng.poisson(config.arrivals_per_day * config.n_users * word_of_mouth))
    waiting = np.flatnonzero(~state.joined)
    arriving = waiting[:n_new]
    joined = state.joined.copy()
    joined[arriving] = True
    join_day = state.join_day.copy()
    join_day[arriving] = day + 1
    seen = np.zeros((total, n_items), bool)
    seen[:, :state.seen.shape[1]] = state.seen[:, :n_items]
    seen[users[:, None].repeat(shown.shape[1], axis=1), shown[human]] = True
    new = UserState(joined=joined, join_day=join_day, churned=churned,
                    satisfaction=satisfaction, seen=seen)
    figures = {"active_users": int(came.sum()), "requests": int(human.sum()),
               "engagement_per_request": float(g.mean()) if len(g) else 0.0,
               "monotony": float(mono.mean()) if len(mono) else 0.0,
               "mean_satisfaction": mean_s, "churned_today": int(leaving.sum()),
               "churned_total": int(churned.sum()), "joined_today": int(len(arriving)),
               "users_in_product": int(active.sum())}
    return new, figures


def save(directory: Path, state: UserState) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(directory / STATE_FILE, joined=state.joined, join_day=state.join_day,
                        churned=state.churned, satisfaction=state.satisfaction,
                        seen=np.packbits(state.seen, axis=1), n_items=state.seen.shape[1])


def load(directory: Path) -> UserState | None:
    path = directory / STATE_FILE
    if not path.exists():
        return None
    with np.load(path) as npz:
        n_items = int(npz["n_items"])
        return UserState(joined=npz["joined"], join_day=npz["join_day"], churned=npz["churned"],
                         satisfaction=npz["satisfaction"],
                         seen=np.unpackbits(npz["seen"], axis=1, count=n_items).astype(bool))
