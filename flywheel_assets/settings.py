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

    @classmethod
    def from_env(cls, data_dir: str | os.PathLike | None = None, **overrides) -> "Settings":
        """Settings from the environment; ``data_dir`` overrides ``FLYWHEEL_DATA_DIR``."""
        chosen = data_dir or os.environ.get("FLYWHEEL_DATA_DIR") or _default_data_dir()
        secret = os.environ.get("FLYWHEEL_PSEUDONYM_SECRET", DEV_PSEUDONYM_SECRET)
        start = os.environ.get("FLYWHEEL_START_DATE")
        for switch, field_name in (("FLYWHEEL_FILTERS", "use_filters"), ("FLYWHEEL_IPS", "use_ips")):
            if os.environ.get(switch) is not None:
                overrides.setdefault(field_name, os.environ[switch].lower() not in ("0", "false", "off", "no"))
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
