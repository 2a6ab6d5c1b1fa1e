"""The blocking check that guards training: a training set worth learning from."""

import dagster as dg

from flywheel_assets.metadata import recorded_result
from flywheel_assets.resources import FlywheelResource
from flywheel_assets.label import gold as gold_lib
from flywheel_assets.train import training_set as ts_lib


@dg.asset_check(asset="training_set", blocking=True, pool="duckdb",
                description="At least `training.min_train_rows` training rows (1000) with more "
                            "than one label grade, at least `training.min_holdout_requests` "
                            "holdout requests (50), labels within the vocabulary's grades, positive "
                            "weights.")
def training_set_is_usable(context: dg.AssetCheckExecutionContext,
                           flywheel: FlywheelResource) -> dg.AssetCheckResult:
    s = flywheel.settings
    t = s.training
    with flywheel.warehouse() as conn:
        problems, counts = ts_lib.usability(conn, context.partition_key, t.min_train_rows,
                                            t.min_holdout_requests, s.signals.max_grade)
        return recorded_result(conn, context.partition_key, "training_set",
                               "training_set_is_usable", not problems,
                               "; ".join(problems) or None, metadata=counts)


@dg.asset_check(asset="training_set", blocking=True, pool="duckdb",
                description="No gold example (same request and item, or same user and item) "
                            "in the training set: the gold set measures what the model never "
                            "learnt from.")
def training_set_has_no_gold(context: dg.AssetCheckExecutionContext,
                             flywheel: FlywheelResource) -> dg.AssetCheckResult:
    with flywheel.warehouse() as conn:
        passed, description, metadata = no_gold(conn, context.partition_key)
        return recorded_result(conn, context.partition_key, "training_set",
                               "training_set_has_no_gold", passed, description, metadata=metadata)


def no_gold(conn, day: str) -> tuple[bool, str | None, dict]:
    """The leakage check's verdict on the day's training set."""
    n, examples = gold_lib.leaked(conn, day)
    description = None if not n else (
        f"{n} training-set rows match gold examples, e.g. impression "
        f"{examples[0]['impression_id']} ({examples[0]['split']}) = gold task "
        f"{examples[0]['task_key']} of {examples[0]['version']}")
    return not n, description, {"leaked_rows": n, "examples": examples}
