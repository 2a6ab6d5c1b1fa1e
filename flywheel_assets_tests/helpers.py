"""Small builders shared by tests."""

import numpy as np
import pandas as pd


def tiny_training_rows(seed: int = 0, n: int = 400) -> pd.DataFrame:
    """Raw training rows with every column the model's features derive from."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "ts": pd.Timestamp("2026-01-01", tz="UTC"), "device": rng.choice(["mobile", "tv"], n),
        "country": rng.choice(["DE", "FR"], n), "age_band": "18-24",
        "signup_date": pd.Timestamp("2025-01-01"), "category": rng.choice(["cat_01", "cat_02"], n),
        "published_date": pd.Timestamp("2025-06-01"), "duration_s": 100.0,
        "popularity": rng.integers(0, 100, n), **{f"c{i}": rng.normal(size=n) for i in range(6)},
        "label_grade": rng.integers(0, 4, n), "weight": 1.0})


def land_day(data_dir, config, day: str) -> None:
    """One simulated day of traffic, served by the champion in service, in ``data_dir``'s
    landing zone."""
    from flywheel_assets.serve.serving import current_policy
    from flywheel_assets.settings import Settings
    from flywheel_assets.simulation import world

    s = Settings.from_env(data_dir)
    world.run_day(s.data_dir, s.landing_dir, config, day, current_policy(s))


def rotate(data_dir, day: str, instance, overrides: dict | None = None,
           selection: list[str] | None = None):
    """``daily_rotation_job`` (or the ``selection`` of its assets) for one day, in
    process on ``instance``; fails the test, naming the failed steps, if a step fails."""
    import dagster as dg

    from flywheel_assets.definitions import build_definitions

    job = build_definitions(str(data_dir), overrides).resolve_job_def("daily_rotation_job")
    keys = [dg.AssetKey(k) for k in selection] if selection else None
    result = job.execute_in_process(partition_key=day, instance=instance, asset_selection=keys,
                                    raise_on_error=False)
    assert result.success, [str(e.event_specific_data.error) for e in result.all_events
                            if e.is_step_failure]
    return result


def rotate_a_tampered_day(data_dir, config, days: list[str], tamper):
    """The wheel for ``days`` but the last; then the last day landed, changed by
    ``tamper(landing_dir, day)`` and rotated, on one ephemeral instance. Returns the
    settings, the instance and the last day's run result."""
    import dagster as dg

    from flywheel_assets.settings import Settings

    instance = dg.DagsterInstance.ephemeral()
    turn_the_wheel(data_dir, config, days[:-1], instance)
    land_day(data_dir, config, days[-1])
    settings = Settings.from_env(data_dir)
    tamper(settings.landing_dir, days[-1])
    return settings, instance, rotate(data_dir, days[-1], instance)


def turn_the_wheel(data_dir, config, days: list[str], instance=None,
                   overrides: dict | None = None) -> list:
    """The wheel for ``days`` in a row: each day landed by the simulated world, served by
    the champion of the day before, then rotated. Returns each day's run result."""
    import dagster as dg

    instance = instance or dg.DagsterInstance.ephemeral()
    results = []
    for day in days:
        land_day(data_dir, config, day)
        results.append(rotate(data_dir, day, instance, overrides))
    return results
