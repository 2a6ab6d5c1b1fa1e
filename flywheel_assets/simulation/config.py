"""Knobs and scenarios of the simulated world."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field

from flywheel_assets.serve.serving import Reranking
from flywheel_assets.settings import ServingSettings

SCENARIOS = ("taste_drift", "catalog_drop", "bot_attack", "broken_client")


@dataclass(frozen=True)
class Scenario:
    """A scenario switched on from ``first_day`` to ``last_day`` (1-based, inclusive).

    ``taste_drift`` and ``catalog_drop`` change the world for good from their first day
    (tastes do not change back; dropped items stay in the catalogue).
    """

    name: str
    first_day: int
    last_day: int | None = None

    def active(self, day: int) -> bool:
        return self.first_day <= day and (self.last_day is None or day <= self.last_day)

    @classmethod
    def parse(cls, text: str) -> "Scenario":
        """``name@N`` (day N only; from N on for drift and drops) or ``name@N-M``."""
        name, _, days = text.partition("@")
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; expected one of {SCENARIOS}, "
                             "e.g. 'bot_attack@3-4'")
        if not days:
            raise ValueError(f"scenario {text!r} needs a day, e.g. '{name}@3' or '{name}@3-5'")
        first, _, last = days.partition("-")
        first_day = int(first)
        last_day = int(last) if last else (None if name in ("taste_drift", "catalog_drop")
                                            else first_day)
        if first_day < 1 or (last_day is not None and last_day < first_day):
            raise ValueError(f"scenario {text!r}: days must be 1-based and ordered")
        return cls(name, first_day, last_day)


PROFILES = ("default", "carousel")
EXAMINATION_MODELS = ("position", "cascade")


@dataclass(frozen=True)
class WorldConfig:
    # "default": a 10-slot media feed with graded signals; "carousel": a 3-slot carousel
    # with clicks only and anonymous requests (simulation/carousel.py).
    profile: str = "default"
    seed: int = 7
    start_date: dt.date = dt.date(2026, 1, 1)
    n_users: int = 5000
    n_items: int = 2000
    requests_per_day: int = 20000
    slate_size: int = 10
    pool_size: int = 30
    latent_dim: int = 8
    n_categories: int = 12
    popularity_skew: float = 1.0
    position_bias_exponent: float = 1.0
    # How users examine a slate. "position" (the click model the product's estimators
    # assume): position k is examined with probability θ_k, whatever is above it.
    # "cascade": users scan down and stop after a satisfying item (grade >= 2) with
    # probability ``cascade_stop``, so what is examined depends on what was shown above.
    # ``examination_top`` < 1: not even the first item is always looked at (the product
    # can only estimate θ relative to position 1). ``trust_bias``: users trust the
    # ranking, so an examined item they would reject is logged as a partial play with
    # probability ``trust_bias`` × θ_k (more often near the top).
    examination_model: str = "position"
    cascade_stop: float = 0.5
    examination_top: float = 1.0
    trust_bias: float = 0.0
    # The product's serving system, as the world runs it: exploration rate, re-ranking
    # (maximal marginal relevance over categories and over the pool's popularity tiers;
    # both 0 = plain top-k) and whether each request's candidate pool is logged (for
    # off-policy evaluation).
    exploration_rate: float = 0.1
    rerank_diversity: float = ServingSettings.diversity
    rerank_popularity_balance: float = ServingSettings.popularity_balance
    log_candidate_pools: bool = True
    bot_fraction: float = 0.03
    # Bots are this many times as active as an average user.
    bot_activity: float = 3.0
    explicit_feedback_rate: float = 0.05
    # Share of examined-and-rejected items for which the client logs an explicit skip;
    # the rest are silent, indistinguishable in the logs from items never looked at.
    skip_log_rate: float = 0.5
    # Exposure feedback: an item's popularity (in the catalogue snapshot, and so in
    # retrieval and in the model's features) counts its plays in the product, each
    # play weighted ``play_feedback`` and decayed with the half-life below: what is
    # shown and played today is retrieved more tomorrow (0 switches the feedback off).
    play_feedback: float = 1.0
    popularity_half_life_days: float = 7.0
    new_items_per_day: int = 10
    catalog_drop_size: int = 500
    consent_rate: float = 0.95
    duplicate_rate: float = 0.002
    broken_client_rate: float = 0.04
    annotator_accuracy: float = 0.9
    # Users who ask for their data to be erased each day; they leave the product.
    deletion_requests_per_day: int = 2
    # Users respond to what they are served (simulation/engagement.py): satisfaction
    # (the summed grade of what they examined over reference_gain, less
    # monotony_weight × the monotony of their slates) moves their activity tomorrow,
    # the unhappy churn, and new users join from a reserve as satisfaction allows.
    # responsive = False: the fixed population of earlier versions.
    responsive: bool = True
    satisfaction_memory: float = 0.3
    # A request's summed grade that counts as 1 (about what the popularity policy gives
    # on the first day of the default world), and the satisfaction at which a user's
    # activity stays as drawn.
    reference_gain: float = 3.0
    neutral_satisfaction: float = 0.85
    activity_sensitivity: float = 1.5
    monotony_weight: float = 1.0
    churn_below: float = 0.5
    churn_rate: float = 0.1
    arrivals_per_day: float = 0.005
    reserve_users: int = 2500
    oracle_requests: int = 2000
    # The world's annotators (simulation/annotators.py) answer each day's labelling
    # queue after a delay: right with probability 1 - annotator_noise (a uniformly
    # random other grade otherwise), a share of tasks by two annotators (agreement),
    # a few skipped (cancelled).
    annotators: int = 4
    annotator_noise: float = 0.05
    annotation_delay_days: int = 1
    annotation_overlap: float = 0.25
    annotation_cancel_share: float = 0.02
    scenarios: tuple[Scenario, ...] = field(default_factory=tuple)
    # Large days (`flywheel benchmark rotation`): candidate pools drawn by inverse-CDF
    # sampling (duplicates redrawn) instead of Gumbel top-k over the whole catalogue,
    # interactions written by DuckDB, the truth's requests saved uncompressed. Another
    # random stream than the default path's, so off by default.
    fast: bool = False

    def __post_init__(self):
        if self.examination_model not in EXAMINATION_MODELS:
            raise ValueError(f"examination_model must be one of {EXAMINATION_MODELS}, "
                             f"got {self.examination_model!r}")
        if not 0.0 < self.examination_top <= 1.0:
            raise ValueError(f"examination_top must be in (0, 1], got {self.examination_top}")

    @property
    def reranking(self) -> Reranking:
        return Reranking(self.rerank_diversity, self.rerank_popularity_balance)

    def active(self, name: str, day: int) -> bool:
        return any(s.name == name and s.active(day) for s in self.scenarios)

    def day_index(self, date: dt.date | str) -> int:
        date = dt.date.fromisoformat(date) if isinstance(date, str) else date
        day = (date - self.start_date).days + 1
        if day < 1:
            raise ValueError(f"{date} is before the world's first day {self.start_date}")
        return day

    def date_of(self, day: int) -> dt.date:
        return self.start_date + dt.timedelta(days=day - 1)

    def replace(self, **changes) -> "WorldConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["start_date"] = self.start_date.isoformat()
        out["scenarios"] = [dataclasses.asdict(s) for s in self.scenarios]
        return out
