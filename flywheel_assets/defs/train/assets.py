"""Train: a rolling window of curated feedback → labelled rows → a versioned model."""

import datetime as dt
import json

import dagster as dg

from flywheel_assets.core import model as model_lib
from flywheel_assets.core import model_store, warehouse
from flywheel_assets.core import training_set as ts_lib
from flywheel_assets.core.signals import MAX_GRADE
from flywheel_assets.core.features import FEATURES
from flywheel_assets.defs.check_results import recorded_result
from flywheel_assets.defs.partitions import daily_partitions
from flywheel_assets.defs.resources import FlywheelResource

MIN_TRAIN_ROWS = 1000
MIN_HOLDOUT_REQUESTS = 50


class TrainingWindowConfig(dg.Config):
    """``window_days`` > 0 overrides `training_window_days` for this run (`retrain_job`
    after drift learns from the recent days only); ``holdout_share`` > 0 holds out only
    the last share of the partition's day (by time) and trains on the rest of it too, so
    a retrain after drift learns from the drifted day itself."""

    window_days: int = 0
    holdout_share: float = 0.0


@dg.asset(group_name="train", partitions_def=daily_partitions, pool="duckdb", kinds={"duckdb"},
          deps=["curated_feedback", "position_bias", "raw_users", "raw_items"])
def training_set(context: dg.AssetExecutionContext, config: TrainingWindowConfig,
                 flywheel: FlywheelResource):
    """Rows of the last `training_window_days` of curated feedback (`ml.training_set`),
    joined with the user and item snapshots of the day, with graded labels from the
    signal hierarchy (save/thumbs_up 3 > complete 2 > partial 1 > skip/thumbs_down/none 0),
    a clipped inverse-propensity weight from `position_bias`, the learning target
    (grade × weight) and a split: `holdout` is the training day itself, `train` the days
    before (capped at `max_training_rows` by a deterministic hash sample). Metadata: the
    clip level, the share of clipped weights and the effective sample size."""
    s = flywheel.settings
    with flywheel.warehouse() as conn:
        window = config.window_days or s.training_window_days
        stats = ts_lib.build_training_set(conn, context.partition_key, window,
                                          s.max_training_rows, s.use_ips, s.ips_clip,
                                          holdout_share=config.holdout_share or None)
    grades = stats.pop("grade_counts")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": stats.pop("rows"), **stats,
        "grade_counts": dg.MetadataValue.json({str(k): v for k, v in grades.items()})})


@dg.asset_check(asset=training_set, blocking=True, pool="duckdb",
                description=f"At least {MIN_TRAIN_ROWS} training rows with more than one "
                            f"label grade, at least {MIN_HOLDOUT_REQUESTS} holdout requests, "
                            "labels within the hierarchy, positive weights.")
def training_set_is_usable(context: dg.AssetCheckExecutionContext,
                           flywheel: FlywheelResource) -> dg.AssetCheckResult:
    with flywheel.warehouse() as conn:
        train, grades, holdout_requests, bad_labels, bad_weights = conn.execute("""
            SELECT count(*) FILTER (WHERE split = 'train'),
                   count(DISTINCT label_grade) FILTER (WHERE split = 'train'),
                   count(DISTINCT request_id) FILTER (WHERE split = 'holdout'),
                   count(*) FILTER (WHERE label_grade NOT BETWEEN 0 AND $max OR label_grade IS NULL),
                   count(*) FILTER (WHERE NOT weight > 0 OR weight IS NULL)
            FROM ml.training_set WHERE partition_date = $d""",
            {"d": context.partition_key, "max": MAX_GRADE}).fetchone()
        problems: list[str] = []
        if train < MIN_TRAIN_ROWS:
            problems.append(f"only {train} training rows (need {MIN_TRAIN_ROWS})")
        if grades < 2:
            problems.append("training labels have a single grade: nothing to learn")
        if holdout_requests < MIN_HOLDOUT_REQUESTS:
            problems.append(f"only {holdout_requests} holdout requests (need {MIN_HOLDOUT_REQUESTS})")
        if bad_labels:
            problems.append(f"{bad_labels} labels outside 0..{MAX_GRADE}")
        if bad_weights:
            problems.append(f"{bad_weights} weights not > 0")
        return recorded_result(conn, context.partition_key, "training_set",
                               "training_set_is_usable", not problems,
                               "; ".join(problems) or None,
                               metadata={"train_rows": train, "distinct_grades": grades,
                                         "holdout_requests": holdout_requests})


@dg.asset(group_name="train", partitions_def=daily_partitions, pool="duckdb", kinds={"sklearn"},
          deps=[training_set])
def candidate_model(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """A gradient-boosted scikit-learn pipeline trained on the `train` split, predicting
    the graded label from user, item and context features. Saved with skops under
    `data/models/<version>/` with a model card, registered in `ml.model_registry`. The
    version is the day plus a hash of the training rows: same data, same version."""
    s = flywheel.settings
    day = context.partition_key
    with flywheel.warehouse() as conn:
        rows = ts_lib.read_split(conn, day, "train")
        fingerprint = ts_lib.fingerprint(conn, day)
    pipeline = model_lib.train(rows, label="target", weight=None)
    # Same rows, labels and parameters → same version; change any of them → new one.
    version = model_store.model_version(
        day, f"{fingerprint}:{json.dumps(model_lib.DEFAULT_PARAMS, sort_keys=True)}")
    parent = model_store.champion_before(s.models_dir, version)
    card = {
        "partition_date": day, "features": FEATURES,
        "label": "target = label_grade (0..3) x clipped inverse examination propensity",
        "params": model_lib.DEFAULT_PARAMS, "train_rows": len(rows),
        "window_start": str(rows["source_date"].min()), "window_end": str(rows["source_date"].max()),
        "source_partitions": sorted(str(d) for d in rows["source_date"].unique()),
        "parent_version": parent, "fingerprint": fingerprint,
    }
    path = model_store.save_model(s.models_dir, version, pipeline, card)
    with flywheel.warehouse() as conn, warehouse.transaction(conn):
        conn.execute("DELETE FROM ml.model_registry WHERE version = ?", [version])
        conn.execute("INSERT INTO ml.model_registry VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [version, day, dt.datetime.now(dt.timezone.utc), str(path), parent,
                      len(rows), card["window_start"], card["window_end"], json.dumps(card)])
    return dg.MaterializeResult(metadata={
        "version": version, "path": dg.MetadataValue.path(str(path)),
        "train_rows": len(rows), "parent_version": parent or "none",
        "window": f"{card['window_start']} .. {card['window_end']}"})
