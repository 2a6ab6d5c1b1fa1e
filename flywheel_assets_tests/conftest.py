from pathlib import Path

import pytest

from flywheel_assets.core.serving import popularity_policy
from flywheel_assets.simulation import world
from flywheel_assets.simulation.config import WorldConfig

DAY1 = "2026-01-01"


@pytest.fixture
def small_world() -> WorldConfig:
    """A world small enough for unit tests, same code paths as the default."""
    return WorldConfig(n_users=400, n_items=300, requests_per_day=1500, pool_size=20)


@pytest.fixture
def landed_day(tmp_path: Path, small_world: WorldConfig) -> Path:
    """A data dir with one simulated landing day, served by the popularity policy."""
    world.run_day(tmp_path, tmp_path / "landing", small_world, DAY1, popularity_policy())
    return tmp_path
