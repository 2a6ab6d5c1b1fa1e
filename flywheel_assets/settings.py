"""One settings object: every path and knob of the product comes from here.

Knobs are grouped by the stage or concern they belong to (``settings.gate.min_effect``,
``settings.drift.large_factor``). Each is read from the environment by one scheme,
``FLYWHEEL_<GROUP>_<FIELD>`` (``FLYWHEEL_SERVING_DIVERSITY=0``), and the few top-level
ones as ``FLYWHEEL_<FIELD>`` (``FLYWHEEL_DATA_DIR``, ``FLYWHEEL_PSEUDONYM_SECRET``,
``FLYWHEEL_START_DATE``). An experiment changes knobs with one mapping of dotted names,
``{"serving.diversity": 0.0}``, given to :meth:`Settings.from_env`,
``build_definitions(overrides=...)`` or the resource: adding a knob touches this file
only. Precedence: overrides, then the environment, then the defaults below. Four knobs
shape the Dagster definitions when they load (``start_date``, the partitions;
``monitor.freshness_*``; ``monitor.sensor_interval_seconds``): they follow the
environment only.

Paths derive from ``FLYWHEEL_DATA_DIR`` (default: ``data/`` next to the project's
``pyproject.toml``), never from the current directory, so two flywheels can run side by
side in different data directories.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
import typing
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

DEV_PSEUDONYM_SECRET = "flywheel-development-secret-do-not-use-in-production"
PACKAGE_DIR = Path(__file__).resolve().parent
ENV_PREFIX = "FLYWHEEL_"
# Older names of two experiment switches, still honoured.
ENV_ALIASES = {"FLYWHEEL_FILTERS": "curation.filters", "FLYWHEEL_IPS": "training.ips"}
# Knobs of earlier versions: a configuration that still sets one is warned, not refused.
REMOVED = {"training.ips_clip": "the training target is grade / θ weighted by θ, with no "
                                "clip (README, `flywheel benchmark target`)"}


def _default_data_dir() -> Path:
    project_root = PACKAGE_DIR.parent
    if (project_root / "pyproject.toml").exists():
        return project_root / "data"
    return Path.home() / ".flywheel" / "data"


@dataclass(frozen=True)
class IngestSettings:
    # Streams that must have a _SUCCESS marker before a day can be ingested.
    required_streams: tuple[str, ...] = ("impressions", "interactions")
    # A stream whose share of quarantined rows in a partition exceeds this fails its
    # blocking check.
    max_quarantine_share: float = 0.05
    # The Great Expectations suite validates every stored row up to this many, a
    # reproducible sample beyond (pandas-backed GX takes seconds per million rows).
    gx_max_rows: int = 50_000
    # Columns a landing file carries beyond the contract are kept as JSON in the raw
    # tables' `extras` (and may become features). They are stored as written: a product
    # that lands personal data in unnamed columns turns this off (or names the column).
    keep_extra_columns: bool = True
    # Identifier-like columns beyond the contract are never stored: only the contract's
    # `user_id` is pseudonymised, so any other id goes. Matched by name in lower case,
    # letters and digits only (`userId` = `user_id`); a nested object is kept as it is.
    identifier_columns: tuple[str, ...] = (
        "user_id", "user", "email", "e_mail", "email_address", "phone", "phone_number",
        "ip", "ip_address", "name", "first_name", "last_name", "full_name", "address",
        "device_id", "advertising_id", "idfa", "gaid", "session_user", "customer_id",
        "account_id")


# The default signal vocabulary and its grades: what each logged signal means. An
# impression's grade is its strongest signal; an examined item with no signal is 0.
DEFAULT_GRADES = {"save": 3, "thumbs_up": 3, "complete": 2, "partial": 1, "click": 1,
                  "skip": 0, "thumbs_down": 0}


@dataclass(frozen=True)
class SignalSettings:
    """The product's feedback vocabulary (curate/signals.py). A click-only product sets
    ``FLYWHEEL_SIGNALS_GRADES="click:1"``; one with purchases ``"click:1,purchase:3"``.
    Interactions with a signal outside the vocabulary are quarantined. Grades are
    computed when `feedback_events` is materialised: after a change, re-materialise
    the training window's partitions."""

    grades: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_GRADES))

    def __post_init__(self):
        bad = [s for s in self.grades if not s or "'" in s or s != s.strip()]
        if not self.grades or bad or any(g < 0 for g in self.grades.values()):
            raise ValueError(f"signals.grades must name at least one signal, each with a grade "
                             f">= 0 and no quotes or outer spaces; got {self.grades!r}")

    @property
    def vocabulary(self) -> tuple[str, ...]:
        return tuple(self.grades)

    @property
    def max_grade(self) -> int:
        return max(self.grades.values())


CONSENT_POLICIES = ("when_logged", "required", "not_logged")
# How a logging policy explored (curate/position_bias.py) and what a policy is worth
# (evaluate/off_policy.py): the choices of `curation.exploration`, `evaluation.value`.
EXPLORATION_MODES = ("flag", "non_contextual", "none")
POLICY_VALUES = ("dcg", "reward")


@dataclass(frozen=True)
class CurationSettings:
    # Bot, contradiction, cap and label-noise filters; off = dedupe and consent only.
    filters: bool = True
    # Training consent: "when_logged" (default) excludes a user whose latest users
    # snapshot says no, and, when the product logs consent flags at all, any row without
    # a flag (anonymous requests included); "required" needs a flag that says yes on
    # every row; "not_logged" uses every row (the product collects consent upstream).
    consent: str = "when_logged"
    # At most this share of judged rows is removed as label noise (confident learning);
    # 0, the default, turns the filter off: it removes rows by their outcomes, which
    # biases the de-biased target, and no run has measured a benefit (README, known
    # limits). A product with mislogged events can set 0.02.
    max_label_issue_share: float = 0.0
    # Position bias is stable; a long window keeps its estimate precise.
    position_bias_window_days: int = 28
    # How the product's logging policy explored (curate/position_bias.py): "flag"
    # (impressions of random slates carry explored = true, or their policy_version is
    # listed in random_policies), "non_contextual" (a bandit or Thompson sampling over
    # items that ignores the request: items land at positions at random), or "none".
    exploration: str = "flag"
    random_policies: tuple[str, ...] = ()

    def __post_init__(self):
        if self.exploration not in EXPLORATION_MODES:
            raise ValueError(f"curation.exploration must be one of {EXPLORATION_MODES}, "
                             f"got {self.exploration!r}")
        if self.consent not in CONSENT_POLICIES:
            raise ValueError(f"curation.consent must be one of {CONSENT_POLICIES}, "
                             f"got {self.consent!r}")


@dataclass(frozen=True)
class CurationRules:
    """What curation removes as bots, spam and low-information rows (curate/filters.py)."""

    # A user whose requests come at near-constant intervals (coefficient of variation
    # of the gaps below this, over at least `min_gaps` gaps) is a machine.
    # (People's gaps vary: with 4 gaps a few thousand users yield CVs under 0.1 by chance;
    # with 6+ gaps under 0.05 it takes a machine.)
    max_gap_cv: float = 0.05
    min_gaps: int = 6
    # People need time to look: median seconds from impression to first reaction.
    human_reaction_floor_s: float = 1.8
    min_reactions: int = 5
    # Saves concentrated on one item.
    min_saves_for_burst: int = 10
    max_top_item_save_share: float = 0.8
    max_requests_per_day: int = 400
    # Impressions of one user kept per day.
    per_user_cap: int = 300
    # A lone "partial" below this watch fraction carries no information.
    min_partial_value: float = 0.05


@dataclass(frozen=True)
class TrainingSettings:
    # Days of curated feedback a candidate learns from.
    window_days: int = 7
    # Training rows are sampled down to this many (deterministically) to bound memory.
    # A week of the default world is about 1.0M curated rows; with profile features a
    # model learns more from all of them than from the 250k of earlier versions (an
    # exploratory comparison, README "Does the wheel compound?").
    max_rows: int = 1_000_000
    # Inverse-propensity weights from the estimated position bias; off = weight 1.
    ips: bool = True
    # A categorical attribute (item_id included) with more distinct values than this in
    # the training window is not used as a feature (gradient-boosted trees bin at most
    # 255 categories).
    max_categories: int = 250
    # Landing columns beyond the contract (`extras`) used as features, by name ("*": all).
    # Opt-in: an unnamed column may carry the outcome itself or an identifier. Extras of
    # impressions should be request context (the same on every impression of a request):
    # off-policy evaluation scores a request's whole pool with them.
    extra_features: tuple[str, ...] = ()
    # The model (train/model.py): a factory registered under the `flywheel.models` entry
    # points ("gradient_boosting", "linear") or a dotted path "package.module:factory";
    # its keyword parameters as a JSON object ("" = the factory's defaults).
    model: str = "gradient_boosting"
    model_params: str = ""
    # The blocking check `training_set_is_usable` asks for at least this much.
    min_train_rows: int = 1000
    min_holdout_requests: int = 50


@dataclass(frozen=True)
class ProfileSettings:
    """Profiles from feedback (curate/profiles.py), the model's `p_*` features."""

    # Off: no profiles, and the model learns from attributes only (`--no-profiles`).
    enabled: bool = True
    # Days of curated feedback a profile summarises, each day's rows weighted
    # 0.5^(age / half_life_days).
    window_days: int = 28
    half_life_days: float = 14.0
    # Rank of the collaborative factors (truncated SVD of the user × item matrix).
    factors: int = 16
    # Every rate is shrunk towards the level above it by this many examinations' worth.
    prior_examinations: float = 10.0


# The random control slice of a labelling queue is never less than this share.
MIN_CONTROL_SHARE = 0.10


# In production (FLYWHEEL_ENV=production) the pseudonymisation key must be a real secret.
MIN_PRODUCTION_SECRET_CHARS = 16


def check_production_secret(secret: object) -> None:
    """Refuse the public development key, or a key too short to guess at, when
    ``FLYWHEEL_ENV=production``: user ids hashed with it could be re-identified."""
    if secret is None or secret == DEV_PSEUDONYM_SECRET:
        raise ValueError("FLYWHEEL_ENV=production and FLYWHEEL_PSEUDONYM_SECRET is not set: "
                         "the development key is public, and user ids hashed with it can be "
                         "re-identified; set a secret of at least "
                         f"{MIN_PRODUCTION_SECRET_CHARS} characters")
    if len(str(secret).strip()) < MIN_PRODUCTION_SECRET_CHARS:
        raise ValueError(f"FLYWHEEL_ENV=production and FLYWHEEL_PSEUDONYM_SECRET has "
                         f"{len(str(secret).strip())} characters: use at least "
                         f"{MIN_PRODUCTION_SECRET_CHARS}")


def check_label_budget(total: int, control_share: float, triage_share: float) -> None:
    """Refuse a labelling budget that would starve the random control slice."""
    if total < 0:
        raise ValueError(f"labeling.budget must be >= 0, got {total}")
    if not MIN_CONTROL_SHARE <= control_share <= 1.0:
        raise ValueError(f"labeling.control_share must be in [{MIN_CONTROL_SHARE}, 1] (the random "
                         f"control slice is at least 10%), got {control_share}")
    if not 0.0 <= triage_share <= 1.0 - control_share:
        raise ValueError("labeling.triage_share must be in [0, 1 - control_share], got "
                         f"{triage_share}")


@dataclass(frozen=True)
class LabelingSettings:
    """People in the loop (label/): the daily queue, the labels that come back, the gold
    set and the audit (docs/architecture.md, "Humans in the loop")."""

    enabled: bool = True
    # Examples queued for people a day; a share (at least 10%) is a uniformly random
    # control slice, a share at most goes to contradicted cases, the rest to active
    # learning.
    budget: int = 200
    control_share: float = 0.2
    triage_share: float = 0.2
    # A human grade at least this is "relevant" (the human-label model's target, the
    # gold-set AUC's positives).
    relevant_grade: int = 2
    # Active learning starts when people labelled this many examples of both kinds;
    # before, the queue takes the champion's least certain examples.
    min_labels: int = 30
    # The day's rows the strategies look at (a seeded sample beyond).
    max_candidates: int = 20_000
    committee_size: int = 5
    # The audit (a model trained on human labels only vs the champion, on the gold set)
    # runs when this many days passed since the last one.
    audit_every_days: int = 7
    # labels_sensor: this many new human labels since the last training → retrain.
    retrain_after_labels: int = 100

    def __post_init__(self):
        check_label_budget(self.budget, self.control_share, self.triage_share)
        if not 0 <= self.relevant_grade <= 3:
            raise ValueError(f"labeling.relevant_grade must be a human grade 0..3, got "
                             f"{self.relevant_grade}")


@dataclass(frozen=True)
class ServingSettings:
    # Maximal-marginal-relevance trade-offs of the serving system over categories and
    # over the pool's popularity tiers (0 and 0 = plain top-k; serve/serving.py).
    # Evaluation values each model as it would be served.
    diversity: float = 0.15
    popularity_balance: float = 0.6


@dataclass(frozen=True)
class EvaluationSettings:
    # Off-policy evaluation reads at most this many logged requests (a hash sample).
    max_ope_requests: int = 20_000
    # Holdout metrics and slices read at most this many requests (a hash sample).
    max_holdout_requests: int = 5_000
    # Bootstrap replicates of every interval (normal intervals from the bootstrap's
    # standard error, which 500 replicates pin down to about 3%).
    bootstrap_samples: int = 500
    # K of every ranking metric (ndcg_at_k, DCG@K): the product's slate size; 0 = read it
    # from the data (the most common number of positions per request).
    slate_size: int = 0
    # The off-policy value of a policy: "dcg" (DCG@K of graded rewards) or "reward" (the
    # expected reward per request: clicks per request on a click-only product).
    value: str = "dcg"
    # A product that logs no candidate pools is valued on its whole catalogue, up to
    # this many items (beyond, rankings are not valued off-policy; the gate says so).
    max_catalogue_pool: int = 200
    # The trust guard: an off-policy estimate with fewer effective samples than this
    # (as a count, or as a share of the impressions it values) or with one weight above
    # this share of the total is untrustworthy, shown so, and the gate holds on it.
    min_effective_sample_size: float = 200.0
    min_ess_share: float = 0.01
    max_weight_share: float = 0.05

    def __post_init__(self):
        if self.value not in POLICY_VALUES:
            raise ValueError(f"evaluation.value must be one of {POLICY_VALUES}, "
                             f"got {self.value!r}")


GATE_RULES = ("single", "confirmed")


@dataclass(frozen=True)
class GateSettings:
    """The promotion rule's thresholds (docs/architecture.md, "The promotion rule").

    Primary metric: the off-policy (doubly robust) DCG@K of the candidate's ranking
    minus the champion's, on the day's logged requests; the lower end of its paired
    bootstrap interval at ``confidence`` must clear the minimum effect: the larger of
    ``min_effect`` (absolute, in the value's unit) and ``min_effect_share`` × the
    champion's value. ``rule``: "confirmed" (default) promotes a candidate only when it
    clears the bound on its own day's logs and again on the next evaluated day's
    (disjoint) logs: two one-sided tests at (1 - confidence) / 2 = 5% each, about 0.25%
    false promotions per candidate that is no better if the two days were independent
    (they share the examination curve's window and the champion, so more; measured by
    ``flywheel benchmark gate``); "single" decides on one day's logs (at the default
    confidence a one-sided 5% test: set ``confidence`` 0.95 for the 2.5% of earlier
    versions).
    Guards: the candidate's catalogue coverage may not fall below (1 - tolerance) x the
    champion's, its exposure Gini may not rise by more than the tolerance, unless it
    stays within the healthy levels anyway (a barely trained, very diverse champion
    must not hold every successor back); no slice with at least ``min_slice_requests``
    requests may lose more NDCG@K than ``slice_tolerance``.
    """

    confidence: float = 0.90
    min_effect: float = 0.0
    min_effect_share: float = 0.0
    rule: str = "confirmed"
    coverage_tolerance: float = 0.15
    concentration_tolerance: float = 0.05
    healthy_coverage: float = 0.5
    healthy_exposure_gini: float = 0.6
    slice_tolerance: float = 0.03
    # A slice guards only with this many requests: its non-inferiority bound (the lower
    # end of the paired difference's interval >= -slice_tolerance) must pass a candidate
    # that is no worse; at 1000 requests and a per-request spread of 0.25 it does 98% of
    # the time (at 200, about half).
    min_slice_requests: int = 1000
    # The trust guard's support limit: the share of a policy's choices the logging policy
    # could make (1 under any exploration; it guards against a logger that never explores).
    min_ope_support: float = 0.99
    # The holdout fallback decides only on this many requests that can rank (two
    # examined items of different grades); fewer is "no information".
    min_informative_requests: int = 50
    # The gold-set guard: from this many gold examples (with both kinds of human label),
    # the lower end of the paired interval of the candidate's gold AUC minus the
    # champion's may not fall below -gold_tolerance.
    min_gold_examples: int = 50
    gold_tolerance: float = 0.03

    def __post_init__(self):
        if self.rule not in GATE_RULES:
            raise ValueError(f"gate.rule must be one of {GATE_RULES}, got {self.rule!r}")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"gate.confidence must be in [0.5, 1), got {self.confidence}")


@dataclass(frozen=True)
class DriftSettings:
    # The reference is the normal days with feedback among the last `reference_days`
    # (from the last day whose drift started a retrain, that day included). A column drifts when its statistic
    # (Jensen-Shannon distance, or Wasserstein distance over the reference std) reaches
    # `noise_multiplier` × the largest it reached on one reference day against the others
    # (at least `min_threshold`); with fewer than `min_reference_days` reference days
    # the last calibrated thresholds (else 0.1) apply. A retrain is asked for when a
    # data column drifts and the drift is large (`large_factor` × its threshold) or
    # persists (`persist_days` days in a row). docs/runbook.md, "drift_report".
    reference_days: int = 7
    min_reference_days: int = 2
    noise_multiplier: float = 3.0
    min_threshold: float = 0.02
    large_factor: float = 2.0
    persist_days: int = 2
    # Rows per side of the Evidently report and of the model's score and residual
    # comparison; candidate-pool attributes are compared on a larger sample.
    sample_rows: int = 5_000
    pool_sample_rows: int = 200_000
    # After drift, retrain_job learns from this many recent days only, the drifted day's
    # first part included: its last `retrain_holdout_share` (by time) is the holdout.
    retrain_window_days: int = 2
    retrain_holdout_share: float = 0.2


@dataclass(frozen=True)
class QualitySettings:
    # quality_sensor: engagement per request (mean grade of the day's logged slates)
    # below this share of its trailing mean triggers a retrain.
    drop_ratio: float = 0.9
    baseline_days: int = 7


@dataclass(frozen=True)
class MonitorSettings:
    # A decision and a drift report a day: the UI marks them stale after these hours.
    freshness_warn_hours: float = 26.0
    freshness_fail_hours: float = 30.0
    # `concentration_not_rising` warns when the exposure Gini of the model in service
    # rose at each of this many rotations.
    rising_rotations: int = 3
    # `flywheel_health` judges the quality trend of the model in service by its
    # least-squares slope over this many rotations, relative to its mean: above the
    # step it is improving, below minus the step degrading; its chart shows more.
    trend_rotations: int = 5
    trend_step: float = 0.005
    chart_rotations: int = 14
    # Sensors tick this often; on a fresh cursor they look back this far only, so
    # turning the UI on over old data does not replay its history.
    sensor_interval_seconds: int = 10
    sensor_lookback_seconds: int = 3600


@dataclass(frozen=True)
class AlertSettings:
    # Alerts are also POSTed here as JSON when set.
    webhook_url: str | None = None
    # Each alert is tried this many times, the i-th retry retry_seconds * 2**(i-1)
    # after the try before (30 s, 1, 2, 4, 8 min: given up after about 15 minutes).
    max_attempts: int = 6
    retry_seconds: float = 30.0
    # One POST waits at most this long; a delivery run sends at most `batch` alerts.
    timeout_seconds: float = 5.0
    batch: int = 20

    def __post_init__(self):
        from flywheel_assets.monitor.alerts import check_webhook_url

        check_webhook_url(self.webhook_url)
        if not 1 <= self.max_attempts <= 20 or self.batch < 1:
            raise ValueError(f"alert.max_attempts must be in [1, 20] and alert.batch at least 1, "
                             f"got {self.max_attempts} and {self.batch}")
        if not (self.retry_seconds >= 1 and self.timeout_seconds > 0):
            raise ValueError(f"alert.retry_seconds must be >= 1 and alert.timeout_seconds > 0, "
                             f"got {self.retry_seconds} and {self.timeout_seconds}")


GROUPS = {"ingest": IngestSettings, "signals": SignalSettings, "curation": CurationSettings,
          "curation_rules": CurationRules, "profiles": ProfileSettings,
          "labeling": LabelingSettings,
          "training": TrainingSettings,
          "serving": ServingSettings, "evaluation": EvaluationSettings, "gate": GateSettings,
          "drift": DriftSettings, "quality": QualitySettings, "monitor": MonitorSettings,
          "alert": AlertSettings}


@dataclass(frozen=True)
class Settings:
    """Paths, the pseudonymisation secret and the knobs of one flywheel, by group."""

    data_dir: Path
    pseudonym_secret: str = DEV_PSEUDONYM_SECRET
    # Secrets used before the current one (FLYWHEEL_PSEUDONYM_PREVIOUS_SECRETS, comma-
    # separated): a deletion request is honoured under each, so that an erased user does
    # not come back when a day hashed under an older one is re-ingested, and rows stored
    # under an older one are erased when the request comes in under the new one.
    pseudonym_previous_secrets: tuple[str, ...] = ()
    # First day of the daily partitions (the simulated world starts here too).
    start_date: dt.date = dt.date(2026, 1, 1)
    # What DuckDB may hold before it spills to `tmp/duckdb` (event-level work streams and
    # spills; the rotation benchmark at 1M impressions: peak 2.2 GB at 1GB, 2.6 GB at 4GB,
    # the same seconds).
    duckdb_memory_limit: str = "1GB"
    # Where the warehouse lives. Empty: one DuckDB file, `warehouse.duckdb` in the data
    # dir (one writer at a time; `make demo`). Otherwise a DuckLake catalog that many
    # processes write at once (FLYWHEEL_WAREHOUSE_CATALOG): `postgres:dbname=flywheel
    # host=db user=flywheel password=...` (writers on any machine) or
    # `sqlite:/path/catalog.sqlite` (one machine), its tables as Parquet files under
    # `warehouse_data` (FLYWHEEL_WAREHOUSE_DATA: a folder, file:// or s3://; default
    # `lake/` in the data dir). docs/architecture.md "Beyond one machine".
    warehouse_catalog: str = ""
    warehouse_data: str = ""
    # An S3-compatible object store for s3:// locations other than AWS's own
    # (FLYWHEEL_S3_ENDPOINT, host:port, e.g. a MinIO server); keys and region come from
    # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION, as for every AWS tool.
    s3_endpoint: str = ""
    s3_use_ssl: bool = True
    # Where the landing zone, the models and the reports live (storage.py): empty, the
    # data dir's `landing/`, `models/`, `reports/`; or a folder, file:///… or
    # s3://bucket/prefix (FLYWHEEL_LANDING_URI, FLYWHEEL_MODELS_URI,
    # FLYWHEEL_REPORTS_URI). For an s3:// one, the data dir's folder of that name is this
    # machine's working copy.
    landing_uri: str = ""
    models_uri: str = ""
    reports_uri: str = ""
    ingest: IngestSettings = field(default_factory=IngestSettings)
    signals: SignalSettings = field(default_factory=SignalSettings)
    curation: CurationSettings = field(default_factory=CurationSettings)
    curation_rules: CurationRules = field(default_factory=CurationRules)
    profiles: ProfileSettings = field(default_factory=ProfileSettings)
    labeling: LabelingSettings = field(default_factory=LabelingSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    serving: ServingSettings = field(default_factory=ServingSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    alert: AlertSettings = field(default_factory=AlertSettings)

    @classmethod
    def from_env(cls, data_dir: str | os.PathLike | None = None,
                 overrides: Mapping[str, object] | None = None) -> "Settings":
        """Settings from the environment; ``data_dir`` overrides ``FLYWHEEL_DATA_DIR``
        and ``overrides`` (dotted names, typed values or strings) any knob."""
        values: dict[str, object] = {}
        for name in knob_names():
            env = env_name(name)
            if os.environ.get(env):
                values[name] = os.environ[env]
        for env, name in ENV_ALIASES.items():
            if os.environ.get(env) is not None:
                # As these switches always read: anything but 0/false/off/no is on.
                values.setdefault(name, os.environ[env].strip().lower()
                                  not in ("0", "false", "off", "no"))
        if os.environ.get("FLYWHEEL_PSEUDONYM_SECRET") is not None:
            values["pseudonym_secret"] = os.environ["FLYWHEEL_PSEUDONYM_SECRET"]
        for name in REMOVED:
            if os.environ.get(env_name(name)):
                values[name] = os.environ[env_name(name)]
        values.update(overrides or {})
        secret = values.get("pseudonym_secret")
        if isinstance(secret, str) and not secret.strip():
            raise ValueError("FLYWHEEL_PSEUDONYM_SECRET is set but empty: set a secret, or "
                             "unset it to use the public development key (with a warning)")
        if os.environ.get("FLYWHEEL_ENV", "").strip().lower() == "production":
            check_production_secret(secret)
        chosen = data_dir or os.environ.get("FLYWHEEL_DATA_DIR") or _default_data_dir()
        base = cls(data_dir=Path(chosen).expanduser().resolve())
        return base.override(values)

    def override(self, values: Mapping[str, object]) -> "Settings":
        """A copy with the knobs named in ``values`` (``"gate.min_effect"``, or a
        top-level name) changed; strings are parsed by the knob's type."""
        top: dict[str, object] = {}
        groups: dict[str, dict[str, object]] = {}
        for name, value in values.items():
            if name in REMOVED:
                warnings.warn(f"setting {name!r} is no longer used: {REMOVED[name]}",
                              stacklevel=2)
                continue
            group, _, knob = name.rpartition(".")
            owner = GROUPS.get(group) if group else type(self)
            known = {f.name: f for f in fields(owner)} if owner else {}
            if knob not in known or (not group and knob in GROUPS) or knob == "data_dir":
                raise ValueError(f"unknown setting {name!r}; known: {', '.join(knob_names())}")
            parsed = _parse(value, _field_type(owner, knob), name)
            (groups.setdefault(group, {}) if group else top)[knob] = parsed
        for group, changes in groups.items():
            top[group] = replace(getattr(self, group), **changes)
        return replace(self, **top)

    def knobs(self) -> dict[str, object]:
        """Every grouped knob by its dotted name (no path, no secret): what a run of
        the product needs to behave as these settings say."""
        return {f"{group}.{f.name}": getattr(getattr(self, group), f.name)
                for group in GROUPS for f in fields(GROUPS[group])}

    # --- paths -------------------------------------------------------------------
    @property
    def warehouse_path(self) -> Path:
        """The warehouse's DuckDB file (when it is not a lake: see ``warehouse``)."""
        return self.data_dir / "warehouse.duckdb"

    @property
    def warehouse(self):
        """What `warehouse.connect` opens: the DuckDB file, or the DuckLake that
        ``warehouse_catalog`` names."""
        if not self.warehouse_catalog.strip():
            return self.warehouse_path
        from flywheel_assets.warehouse import Lake

        data = self.warehouse_data.strip() or str(self.data_dir / "lake")
        if data.startswith("file:"):
            from urllib.parse import unquote, urlparse

            data = unquote(urlparse(data).path)
        if "://" not in data:
            # A relative folder is the data dir's, whatever folder a command starts in.
            data = str((self.data_dir / Path(data).expanduser()).resolve()) + "/"
        return Lake(self.warehouse_catalog.strip(), data, self.s3_options())

    def s3_options(self) -> tuple[tuple[str, str], ...]:
        """The object store's settings, as DuckDB's S3 secret takes them."""
        options = {"KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", ""),
                   "SECRET": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
                   "REGION": os.environ.get("AWS_REGION")
                   or os.environ.get("AWS_DEFAULT_REGION", ""),
                   "SESSION_TOKEN": os.environ.get("AWS_SESSION_TOKEN", "")}
        if self.s3_endpoint.strip():
            options.update(ENDPOINT=self.s3_endpoint.strip(), URL_STYLE="path",
                           USE_SSL=str(self.s3_use_ssl).lower())
        return tuple((k, v) for k, v in options.items() if v)

    def _location(self, uri: str, area: str):
        from flywheel_assets import storage

        return storage.Location(uri.strip() or str(self.data_dir / area), self.data_dir / area,
                                storage.S3Options.from_env(self.s3_endpoint, self.s3_use_ssl),
                                base=self.data_dir)

    @functools.cached_property
    def landing(self):
        """The landing zone (a `storage.Location`): where producers write days."""
        return self._location(self.landing_uri, "landing")

    @functools.cached_property
    def models(self):
        """The model versions and the champion pointer (a `storage.Location`)."""
        return self._location(self.models_uri, "models")

    @functools.cached_property
    def reports(self):
        """The evaluation and drift reports (a `storage.Location`)."""
        return self._location(self.reports_uri, "reports")

    @property
    def landing_dir(self) -> Path:
        """The landing zone's folder on this machine (its working copy when remote)."""
        return self.landing.cache

    @property
    def labeling_dir(self) -> Path:
        return self.data_dir / "labeling"

    @property
    def models_dir(self) -> Path:
        """The models' folder on this machine (the working copy when remote)."""
        return self.models.cache

    @property
    def reports_dir(self) -> Path:
        """The reports' folder on this machine (the working copy when remote)."""
        return self.reports.cache

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster_home"

    @property
    def duckdb_temp_dir(self) -> Path:
        return self.data_dir / "tmp" / "duckdb"

    @property
    def uses_development_secret(self) -> bool:
        return self.pseudonym_secret == DEV_PSEUDONYM_SECRET

    DEVELOPMENT_SECRET_WARNING = (
        "FLYWHEEL_PSEUDONYM_SECRET is not set: user ids are pseudonymised with the public "
        "development key, so anyone can re-identify them. Set a secret before ingesting "
        "real users' data.")

    def ensure_dagster_home(self) -> Path:
        """Create DAGSTER_HOME with the project's instance config if it has none (the
        kind FLYWHEEL_DAGSTER_INSTANCE chooses: see :func:`ensure_instance_config`)."""
        return ensure_instance_config(self.dagster_home)


# The Dagster instance a new DAGSTER_HOME gets (FLYWHEEL_DAGSTER_INSTANCE): the embedded
# one (SQLite files under DAGSTER_HOME; `make demo`, a first deployment), or one whose
# run, event log and schedule storage are on a PostgreSQL server (FLYWHEEL_POSTGRES_URL,
# read by Dagster when the instance loads, so the password is never written to disk).
INSTANCE_ENV, POSTGRES_URL_ENV = "FLYWHEEL_DAGSTER_INSTANCE", "FLYWHEEL_POSTGRES_URL"
INSTANCE_CONFIGS = {"embedded": "dagster.yaml", "postgres": "dagster.postgres.yaml"}


def chosen_instance() -> str:
    """The instance kind the environment asks for ("embedded" unless it says)."""
    kind = os.environ.get(INSTANCE_ENV, "").strip().lower() or "embedded"
    if kind not in INSTANCE_CONFIGS:
        raise ValueError(f"{INSTANCE_ENV}={os.environ[INSTANCE_ENV]!r}: expected one of "
                         f"{', '.join(INSTANCE_CONFIGS)}")
    if kind == "postgres":
        check_postgres_url(os.environ.get(POSTGRES_URL_ENV, ""))
    return kind


POSTGRES_URL_EXAMPLE = "postgresql+psycopg2://flywheel:PASSWORD@db.internal:5432/dagster"


def check_postgres_url(url: str) -> None:
    """Refuse a Postgres URL that the instance could not use, before Dagster does it
    half-way. It must name the psycopg2 driver: SQLAlchemy 2.1 (what dagster 1.13
    installs) opens a bare postgresql:// with psycopg 3, under which dagster-postgres's
    event log fails at the first event (``NOTIFY run_events, $1``: a syntax error)."""
    url = url.strip()
    if not url:
        raise ValueError(f"{INSTANCE_ENV}=postgres needs {POSTGRES_URL_ENV}, e.g. "
                         f"{POSTGRES_URL_EXAMPLE}")
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme != "postgresql+psycopg2":
        shown = scheme or "something that is not a URL"  # never the rest: a password
        raise ValueError(f"{POSTGRES_URL_ENV} must start with postgresql+psycopg2:// (the "
                         f"driver dagster-postgres works with), not {shown!r}; e.g. "
                         f"{POSTGRES_URL_EXAMPLE}")


def instance_kind(config_path: Path) -> str:
    """What an instance config stores its runs in: "postgres" when its storage (or its
    run storage) is Dagster's Postgres storage, else "embedded"."""
    import yaml

    config = yaml.safe_load(config_path.read_text()) or {}
    storage = config.get("storage") or {}
    run_storage = config.get("run_storage") or {}
    on_postgres = "postgres" in storage or run_storage.get("module") == "dagster_postgres"
    return "postgres" if on_postgres else "embedded"


def ensure_instance_config(dagster_home: str | os.PathLike) -> Path:
    """DAGSTER_HOME with an instance config: the packaged one of the chosen kind when it
    has none. One that is there is kept (a team's own is theirs), unless
    FLYWHEEL_DAGSTER_INSTANCE asks for another kind than it is: that is refused, naming
    both, rather than silently running on the other storage."""
    home = Path(dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    asked = os.environ.get(INSTANCE_ENV, "").strip()
    kind = chosen_instance()
    if target.exists():
        present = instance_kind(target)
        if asked and present != kind:
            raise ValueError(f"{target} is an {present} instance but {INSTANCE_ENV}={kind}: "
                             f"use another DAGSTER_HOME, or move that file away to start the "
                             f"{kind} one (runs recorded in the {present} one stay there)")
        return home
    # Whole or not at all: a command started at the same time never reads half.
    partial = target.with_name(f".dagster.yaml.{os.getpid()}")
    shutil.copyfile(PACKAGE_DIR / INSTANCE_CONFIGS[kind], partial)
    os.replace(partial, target)
    return home


def knob_names() -> list[str]:
    """Every setting that the environment or an override can change."""
    top = [f.name for f in fields(Settings) if f.name not in GROUPS and f.name != "data_dir"]
    return top + [f"{g}.{f.name}" for g, cls in GROUPS.items() for f in fields(cls)]


def env_name(name: str) -> str:
    """``gate.min_effect`` → ``FLYWHEEL_GATE_MIN_EFFECT``."""
    return ENV_PREFIX + name.replace(".", "_").upper()


def encode(values: Mapping[str, object]) -> dict[str, str]:
    """Overrides as strings (Dagster resource config), parsed back by the knob's type."""
    return {k: (",".join(v) if isinstance(v, tuple) else
                ",".join(f"{a}:{b}" for a, b in v.items()) if isinstance(v, dict) else
                "" if v is None else
                str(v).lower() if isinstance(v, bool) else str(v)) for k, v in values.items()}


@functools.cache
def _type_hints(owner: type) -> dict:
    return typing.get_type_hints(owner)


def _field_type(owner: type, name: str):
    return _type_hints(owner)[name]


def _parse(value: object, kind, name: str):
    if not isinstance(value, str) or kind is str:
        return value  # text knobs (the pseudonym secret) are taken verbatim
    text = value.strip()
    try:
        if kind is bool:
            if text.lower() in ("1", "true", "on", "yes"):
                return True
            if text.lower() in ("0", "false", "off", "no"):
                return False
            raise ValueError("expected one of 1/0, true/false, on/off, yes/no")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind is dt.date:
            return dt.date.fromisoformat(text)
        if typing.get_origin(kind) is dict:
            pairs = [p.partition(":") for p in text.split(",") if p.strip()]
            if not pairs or any(not sep or not a.strip() for a, sep, _ in pairs):
                raise ValueError("expected name:number pairs, e.g. 'click:1,purchase:3'")
            return {a.strip(): int(b) for a, _, b in pairs}
        if typing.get_origin(kind) is tuple:
            return tuple(p.strip() for p in text.split(",") if p.strip())
        if kind == (str | None):
            return text or None
        return text
    except ValueError as exc:
        raise ValueError(f"setting {name} ({env_name(name)}): cannot read {value!r}: {exc}") from exc

