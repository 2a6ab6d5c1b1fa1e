"""The world's code location: simulated traffic in, the champion against the truth out.

Remove this location from ``workspace.yaml`` and point the product at real landing
files: nothing in the product changes.
"""

import dagster as dg

from flywheel_assets import storage
from flywheel_assets.metadata import readable
from flywheel_assets.partitions import daily_partitions
from flywheel_assets.serve.serving import current_policy
from flywheel_assets.settings import Settings
from flywheel_assets.simulation import annotators, world
from flywheel_assets.simulation.config import Scenario


class WorldResource(dg.ConfigurableResource):
    """Where the world lives (``FLYWHEEL_DATA_DIR`` unless ``data_dir`` is set); its
    knobs are saved in ``data/world/config.json`` by the run that created it."""

    data_dir: str | None = None

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.data_dir)


class SimulatedTrafficConfig(dg.Config):
    """Scenarios to switch on for this run, e.g. ``["taste_drift@1"]`` (days count from
    the partition's day number in the world)."""

    scenarios: list[str] = []


@dg.asset(group_name="simulation", partitions_def=daily_partitions, kinds={"python"},
          pool="duckdb", deps=[dg.AssetKey("champion_model")])
def simulated_traffic(context: dg.AssetExecutionContext, config: SimulatedTrafficConfig,
                      world_env: WorldResource):
    """One day of the simulated product: users and bots send requests, the current
    champion (popularity before the first promotion) ranks candidate pools with
    exploration and logs propensities, users examine and react. Writes the landing files
    of the day with `_SUCCESS` markers and keeps the hidden truth under `data/world/`."""
    s = world_env.settings
    directory = world.world_dir(s.data_dir)
    cfg = world.load_config(directory)
    if config.scenarios:
        cfg = cfg.replace(scenarios=cfg.scenarios + tuple(Scenario.parse(x) for x in config.scenarios))
    policy = current_policy(s)
    stats = world.run_day(s.data_dir, s.landing_dir, cfg, context.partition_key, policy)
    storage.publish_landing_day(s.landing, context.partition_key)
    day = cfg.day_index(context.partition_key)
    return dg.MaterializeResult(metadata=readable(**{
        "impressions": stats["impressions"], "interactions": stats["interactions"],
        "served_by": stats["policy_version"], "malformed_rows": stats["broken_rows"],
        "world_day": day,
        "active_scenarios": ", ".join(s.name for s in cfg.scenarios if s.active(day)) or "none"}))


@dg.asset(group_name="simulation", partitions_def=daily_partitions, kinds={"python"},
          deps=[dg.AssetKey("labeling_queue")])
def simulated_annotations(context: dg.AssetExecutionContext, world_env: WorldResource):
    """The world's annotators answer the labelling queue written
    `annotation_delay_days` before this day (`data/labeling/outbox/<day>/tasks.json`),
    each right with probability 1 - `annotator_noise`, and drop a Label Studio JSON
    export into `data/labeling/inbox/`, where the day's `human_labels` finds it."""
    s = world_env.settings
    directory = world.world_dir(s.data_dir)
    done = annotators.answer(s.data_dir, directory, world.load_config(directory),
                             context.partition_key)
    return dg.MaterializeResult(metadata=readable(**done))


@dg.asset(group_name="simulation", partitions_def=daily_partitions, kinds={"python"},
          pool="duckdb", deps=[dg.AssetKey("champion_model"), simulated_traffic])
def oracle_evaluation(context: dg.AssetExecutionContext, world_env: WorldResource):
    """The champion after the day's rotation, measured against the hidden truth: NDCG@10
    of its ranking vs the ideal ranking by true expected grade, and regret, on a fixed
    panel of users; the popularity policy alongside as the baseline. Also the validity
    of the signal the product learnt from: bot filter precision and recall against the
    known bots, the estimated position-bias curve's worst relative error against the
    true curve, and the effective sample size of the training weights."""
    s = world_env.settings
    cfg = world.load_config(world.world_dir(s.data_dir))
    record = world.oracle_day(s, cfg, context.partition_key, current_policy(s))
    return dg.MaterializeResult(metadata=readable(**{
        k: v for k, v in record.items() if k != "date" and v is not None}))


simulated_traffic_job = dg.define_asset_job(
    "simulated_traffic_job", selection=[simulated_traffic, simulated_annotations],
    partitions_def=daily_partitions,
    description="Land one simulated day of traffic served by the current champion, and "
                "the annotators' answers to the queue due that day.")
oracle_evaluation_job = dg.define_asset_job(
    "oracle_evaluation_job", selection=[oracle_evaluation], partitions_def=daily_partitions,
    description="Measure the current champion against the world's hidden truth.")


def build_world_definitions(data_dir: str | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=[simulated_traffic, simulated_annotations, oracle_evaluation],
        jobs=[simulated_traffic_job, oracle_evaluation_job],
        resources={"world_env": WorldResource(data_dir=data_dir)},
    )


defs = build_world_definitions()
