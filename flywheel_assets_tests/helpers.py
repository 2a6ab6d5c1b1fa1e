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
    from flywheel_assets import storage
    from flywheel_assets.serve.serving import current_policy
    from flywheel_assets.settings import Settings
    from flywheel_assets.simulation import world

    s = Settings.from_env(data_dir)
    world.run_day(s.data_dir, s.landing_dir, config, day, current_policy(s))
    storage.publish_landing_day(s.landing, day)  # as `simulated_traffic` does


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


def rows_digest(conn, relation: str, params=()) -> tuple[int, str]:
    """Rows and an md5 of the sorted rows (as text) of ``relation``: a table name or a
    parenthesised query."""
    return conn.execute(
        f"SELECT count(*), md5(coalesce(string_agg(r, '|' ORDER BY r), '')) FROM "
        f"(SELECT CAST(t AS VARCHAR) AS r FROM {relation} t)", params).fetchall()[0]


def partition_digests(conn, schemas: list[str], day: str,
                      skip: tuple[str, ...] = ()) -> dict[str, tuple[int, str]]:
    """``rows_digest`` of the day's partition of every table in ``schemas`` that has
    one, keyed ``schema.table``; columns named ``*_at`` (times of writing) and those in
    ``skip`` left out."""
    out = {}
    tables = conn.execute(
        "SELECT DISTINCT table_schema, table_name FROM information_schema.columns "
        "WHERE table_schema IN (SELECT unnest(?)) AND column_name = 'partition_date' "
        "ORDER BY 1, 2", [list(schemas)]).fetchall()
    for schema, name in tables:
        left_out = [c for (c,) in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? "
            "AND table_name = ? AND (column_name LIKE '%\\_at' ESCAPE '\\' "
            "OR column_name IN (SELECT unnest(?)))", [schema, name, list(skip)]).fetchall()]
        exclude = f" EXCLUDE ({', '.join(left_out)})" if left_out else ""
        out[f"{schema}.{name}"] = rows_digest(
            conn, f"(SELECT *{exclude} FROM {schema}.{name} WHERE partition_date = ?)", [day])
    return out
