"""One settings object: every path and knob of the product comes from here.

Paths derive from ``FLYWHEEL_DATA_DIR`` (default: ``data/`` next to the project's
``pyproject.toml``), never from the current directory, so two flywheels can run side by
side in different data directories.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

DEV_PSEUDONYM_SECRET = "flywheel-development-secret-do-not-use-in-production"
PACKAGE_DIR = Path(__file__).resolve().parent


def _default_data_dir() -> Path:
    project_root = PACKAGE_DIR.parent
    if (project_root / "pyproject.toml").exists():
        return project_root / "data"
    return Path.home() / ".flywheel" / "data"


# Maximal-marginal-relevance trade-offs of the serving system over categories and over
# the pool's popularity tiers (0 and 0 = plain top-k; core/serving.py).
DEFAULT_SERVING_DIVERSITY = 0.15
DEFAULT_SERVING_POPULARITY_BALANCE = 0.6


@dataclass(frozen=True)
class Settings:
    """Paths, the pseudonymisation secret and the thresholds of one flywheel."""

    data_dir: Path
    pseudonym_secret: str = DEV_PSEUDONYM_SECRET
    # First day of the daily partitions (the simulated world starts here too).
    start_date: dt.date = dt.date(2026, 1, 1)
    # Days of curated feedback a candidate learns from.
    training_window_days: int = 7
    # Training rows are sampled down to this many (deterministically) to bound memory.
    max_training_rows: int = 250_000
    # A stream whose share of quarantined rows in a partition exceeds this fails its
    # blocking check.
    max_quarantine_share: float = 0.05
    # Streams that must have a _SUCCESS marker before a day can be ingested.
    required_streams: tuple[str, ...] = ("impressions", "interactions")
    duckdb_memory_limit: str = "4GB"
    # Curation filters (bots, contradictions, caps, label noise); off = dedupe only.
    use_filters: bool = True
    # Inverse-propensity weights from the estimated position bias; off = weight 1.
    use_ips: bool = True
    # IPS weights are clipped at this level (1 / examination of position 10 is ~10).
    ips_clip: float = 10.0
    # Position bias is stable; a long window keeps its estimate precise.
    position_bias_window_days: int = 28
    # At most this share of judged rows is removed as label noise.
    max_label_issue_share: float = 0.02
    # The promotion gate (DESIGN §7). Primary metric: the off-policy (doubly robust)
    # DCG@10 of the candidate's ranking minus the champion's, on the day's logged
    # requests; the lower end of its paired bootstrap interval at this confidence must
    # clear the minimum effect (absolute DCG@10 units).
    promotion_confidence: float = 0.95
    promotion_min_effect: float = 0.0
    # Guards: the candidate's catalogue coverage may not fall below (1 - tolerance) ×
    # the champion's; its exposure Gini may not rise by more than the tolerance; no
    # slice (new items, new users, devices) may lose more NDCG@10 than the tolerance.
    coverage_tolerance: float = 0.15
    concentration_tolerance: float = 0.05
    # ... unless the candidate stays within these healthy levels anyway.
    healthy_coverage: float = 0.5
    healthy_exposure_gini: float = 0.6
    slice_tolerance: float = 0.03
    min_slice_requests: int = 200
    # Off-policy evaluation reads at most this many logged requests (a hash sample),
    # and is trusted only when the logging policy could show what the candidate
    # chooses (support); below that the gate falls back to the holdout.
    max_ope_requests: int = 20_000
    # Holdout metrics and slices read at most this many requests (a hash sample).
    max_holdout_requests: int = 5_000
    # How the serving system re-ranks (maximal marginal relevance over categories,
    # FLYWHEEL_SERVING_DIVERSITY, and over the pool's popularity tiers,
    # FLYWHEEL_SERVING_POPULARITY_BALANCE; both 0 = plain top-k): evaluation values
    # each model as it would be served.
    serving_diversity: float = DEFAULT_SERVING_DIVERSITY
    serving_popularity_balance: float = DEFAULT_SERVING_POPULARITY_BALANCE
    min_ope_support: float = 0.99
    ope_bootstrap_samples: int = 200
    # Monitoring (docs/runbook.md). A column drifts when its statistic (Jensen-Shannon
    # distance, or Wasserstein distance over the reference std) reaches 0.1; the day
    # drifts when this share of columns does (FLYWHEEL_DRIFT_SHARE_THRESHOLD): 0.05 is one
    # column in the 19 compared; on normal simulated days none drifts.
    drift_share_threshold: float = 0.05
    # Rows per side of the Evidently report and of the model's score and residual
    # comparison; candidate-pool attributes are compared on a larger sample.
    drift_sample_rows: int = 5_000
    drift_pool_sample_rows: int = 200_000
    # After drift, retrain_job learns from this many recent days only, the drifted day's
    # first part included: its last `drift_retrain_holdout_share` (by time) is the holdout.
    drift_retrain_window_days: int = 2
    drift_retrain_holdout_share: float = 0.2
    # quality_sensor: engagement per request (mean grade of the day's logged slates)
    # below this share of its trailing mean triggers a retrain.
    quality_drop_ratio: float = 0.9
    quality_baseline_days: int = 7
    # Alerts also go to this webhook when set (FLYWHEEL_ALERT_WEBHOOK_URL).
    alert_webhook_url: str | None = None

    @classmethod
    def from_env(cls, data_dir: str | os.PathLike | None = None, **overrides) -> "Settings":
        """Settings from the environment; ``data_dir`` overrides ``FLYWHEEL_DATA_DIR``."""
        chosen = data_dir or os.environ.get("FLYWHEEL_DATA_DIR") or _default_data_dir()
        secret = os.environ.get("FLYWHEEL_PSEUDONYM_SECRET", DEV_PSEUDONYM_SECRET)
        start = os.environ.get("FLYWHEEL_START_DATE")
        for switch, field_name in (("FLYWHEEL_FILTERS", "use_filters"), ("FLYWHEEL_IPS", "use_ips")):
            if os.environ.get(switch) is not None:
                overrides.setdefault(field_name, os.environ[switch].lower() not in ("0", "false", "off", "no"))
        if os.environ.get("FLYWHEEL_DRIFT_SHARE_THRESHOLD"):
            overrides.setdefault("drift_share_threshold",
                                 float(os.environ["FLYWHEEL_DRIFT_SHARE_THRESHOLD"]))
        if os.environ.get("FLYWHEEL_ALERT_WEBHOOK_URL"):
            overrides.setdefault("alert_webhook_url", os.environ["FLYWHEEL_ALERT_WEBHOOK_URL"])
        if os.environ.get("FLYWHEEL_SERVING_DIVERSITY"):
            overrides.setdefault("serving_diversity", float(os.environ["FLYWHEEL_SERVING_DIVERSITY"]))
        if os.environ.get("FLYWHEEL_SERVING_POPULARITY_BALANCE"):
            overrides.setdefault("serving_popularity_balance",
                                 float(os.environ["FLYWHEEL_SERVING_POPULARITY_BALANCE"]))
        values = dict(data_dir=Path(chosen).expanduser().resolve(), pseudonym_secret=secret)
        if start:
            values["start_date"] = dt.date.fromisoformat(start)
        values.update(overrides)
        return cls(**values)

    def with_overrides(self, **overrides) -> "Settings":
        return replace(self, **overrides)

    # --- paths -------------------------------------------------------------------
    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

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
        """Create DAGSTER_HOME with the project's instance config if it has none."""
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        target = self.dagster_home / "dagster.yaml"
        if not target.exists():
            shutil.copyfile(PACKAGE_DIR / "dagster.yaml", target)
        return self.dagster_home
