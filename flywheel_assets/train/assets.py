"""Train: a rolling window of curated feedback → labelled rows → a versioned model."""

import dagster as dg

from flywheel_assets.metadata import readable
from flywheel_assets.partitions import daily_partitions
from flywheel_assets.resources import FlywheelResource
from flywheel_assets.train import candidate
from flywheel_assets.train import model as model_lib
from flywheel_assets.train import training_set as ts_lib


class TrainingWindowConfig(dg.Config):
    """``window_days`` > 0 overrides `training.window_days` for this run (`retrain_job`
    after drift learns from the recent days only); ``holdout_share`` > 0 holds out only
    the last share of the partition's day (by time) and trains on the rest of it too, so
    a retrain after drift learns from the drifted day itself."""

    window_days: int = 0
    holdout_share: float = 0.0


@dg.asset(group_name="train", partitions_def=daily_partitions, pool="duckdb", kinds={"duckdb"},
          deps=["curated_feedback", "position_bias", "raw_users", "raw_items", "gold_set"])
def training_set(context: dg.AssetExecutionContext, config: TrainingWindowConfig,
                 flywheel: FlywheelResource):
    """Rows of the last `training.window_days` of curated feedback (`ml.training_set`),
    joined with the user and item snapshots of the day when the product lands them, with
    graded labels from the signal vocabulary (`signals.grades`; by default save/thumbs_up
    3 > complete 2 > partial/click 1 > skip/thumbs_down/none 0),
    the learning target de-biased by `position_bias` (grade / examination of the row's
    position, weighted by that examination) and a split: `holdout` is the training day
    itself, `train` the days before (capped at `training.max_rows` by a deterministic
    hash sample). Examples that are or may become gold (`gold_set`, and the queue's
    random and contradicted picks: same request and item, or same user and item) are
    left out. Metadata: the target, the smallest examination weight, the largest
    target and the effective sample size of the weights."""
    s = flywheel.settings
    t = s.training
    with flywheel.warehouse() as conn:
        stats = ts_lib.build_training_set(conn, context.partition_key,
                                          config.window_days or t.window_days, t.max_rows,
                                          t.ips,
                                          holdout_share=config.holdout_share or None,
                                          consent=s.curation.consent,
                                          max_grade=s.signals.max_grade)
    grades = stats.pop("grade_counts")
    return dg.MaterializeResult(metadata=readable(**{
        "dagster/row_count": stats.pop("rows"), **stats,
        "grade_counts": {str(k): v for k, v in grades.items()}}))


@dg.asset(group_name="train", partitions_def=daily_partitions, pool="duckdb", kinds={"sklearn"},
          deps=[training_set, dg.AssetDep("feedback_profiles", partition_mapping=(
              dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)))])
def candidate_model(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """The configured scikit-learn model (`training.model`: gradient-boosted trees by
    default, any registered or dotted-path factory) trained on the `train` split, predicting
    the graded label from the features the training rows support (context, user and
    item attributes, the item id of a small catalogue, the extra columns named in
    `training.extra_features`, and what users did: the `p_*` features of
    `feedback_profiles` as of the day before each row's; listed in the card and the
    metadata). Saved with skops under
    `data/models/<version>/` with a model card, registered in `ml.model_registry`. The
    version is the day plus a hash of the training rows: same data, same version."""
    s = flywheel.settings
    card = candidate.train_candidate(flywheel.warehouse, s.models, context.partition_key,
                                     s.training.max_categories, s.training.extra_features,
                                     s.profiles.enabled, s.training.model,
                                     model_lib.parse_params(s.training.model_params))
    return dg.MaterializeResult(metadata=readable(
        version=card["version"], model=f"{card['model']} ({card['estimator']})", path=dg.MetadataValue.path(str(card["path"])),
        train_rows=card["train_rows"], parent_version=card["parent_version"] or "none",
        window=f"{card['window_start']} .. {card['window_end']}",
        features=", ".join([*card["features"]["categorical"], *card["features"]["numeric"]])))
