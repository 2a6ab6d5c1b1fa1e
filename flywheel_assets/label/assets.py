"""Label: people in the loop. The day's queue goes out, labels come back, gold is cut
from them and audits the loop (docs/architecture.md, "Humans in the loop")."""

import dagster as dg

from flywheel_assets import warehouse
from flywheel_assets.label import audit as audit_lib
from flywheel_assets.label import gold as gold_lib
from flywheel_assets.label import labels as labels_lib
from flywheel_assets.label import outbox
from flywheel_assets.label import queue as queue_lib
from flywheel_assets.metadata import readable
from flywheel_assets.monitor.alerts import Alert, raise_alert
from flywheel_assets.monitor.alerts import backlog as alert_backlog
from flywheel_assets.monitor.jobs import note_backlog
from flywheel_assets.partitions import daily_partitions
from flywheel_assets.resources import FlywheelResource

# No dependency on labeling_queue: the inbox files are the interface (labels of any
# earlier day's queue come back whenever people finish), and a dependency back would
# close a cycle in the graph (queue → labels → gold → training set → queue).
@dg.asset(group_name="label", partitions_def=daily_partitions, pool="duckdb", kinds={"duckdb"})
def human_labels(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """Labels people returned: every file in `data/labeling/inbox/` not imported before
    (Label Studio JSON or JSON_MIN export, or CSV). Each annotation is accepted
    (`label.annotations`) or quarantined with its reason (`label.quarantined_labels`):
    unknown task keys, duplicates, cancelled annotations, grades outside the scale,
    malformed rows and files. Rows read = accepted + quarantined, per file
    (`label.inbox_files`). Tasks annotated today get one resolved grade
    (`label.human_labels`); several annotators on a task give Krippendorff's alpha."""
    s = flywheel.settings
    with flywheel.warehouse() as conn:
        day = labels_lib.import_inbox(conn, s.labeling_dir / "inbox", context.partition_key)
    return dg.MaterializeResult(metadata=readable(**{
        "dagster/row_count": day["labels"], "new_labels": dg.MetadataValue.int(day["labels"]),
        "files": day["files"], "rows_read": day["rows_read"], "accepted": day["accepted"],
        "quarantined": day["quarantined"], "quarantine_reasons": day["quarantine_reasons"],
        "agreement_alpha": day["agreement_alpha"],
        "agreement_alpha_today": day["agreement_alpha_today"]}))


@dg.asset(group_name="label", partitions_def=daily_partitions, pool="duckdb", kinds={"duckdb"},
          deps=[human_labels])
def gold_set(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """The frozen, versioned evaluation set (`label.gold_set`, version `gold-<day>`):
    every human-labelled example of the random control slice and of the contradicted
    cases, production failures first. A version is cut on a day new labels of that kind
    arrived and never changes after; training sets never contain a gold example (the
    blocking check `training_set_has_no_gold`)."""
    s = flywheel.settings
    with flywheel.warehouse() as conn:
        with warehouse.transaction(conn):
            cut = gold_lib.cut_version(conn, context.partition_key, s.labeling.relevant_grade,
                                       s.signals.max_grade)
    return dg.MaterializeResult(metadata=readable(**{
        "version": cut.get("version") or "none yet", "new_examples": cut["new_examples"],
        "dagster/row_count": cut.get("size", 0), "failures": cut.get("failures", 0)}))


@dg.asset(group_name="label", partitions_def=daily_partitions, pool="duckdb",
          kinds={"duckdb", "sklearn"}, deps=["training_set", "champion_model"])
def labeling_queue(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """The day's examples for people (`labeling.budget`): a random control slice (at
    least 10%, an unbiased sample), contradicted cases (a thumbs down or a bare skip on
    the item the champion ranked first; most confident first), and active learning on a
    model of the human label (uncertainty, query by committee, expected model change;
    scikit-activeml). Stored in `label.labeling_queue`; written to
    `data/labeling/outbox/<day>/` as Label Studio import JSON (the champion's guess as a
    prediction with its score) and CSV (formula cells escaped). Pseudonymous keys only.
    A queue once issued is kept as it was on a re-run (people answer its task keys)."""
    s = flywheel.settings
    if not s.labeling.enabled:
        return dg.MaterializeResult(metadata={"tasks": 0, "note": "labeling.enabled is off"})
    with flywheel.warehouse() as conn:
        built = queue_lib.build_queue(conn, s, context.partition_key)
    folder = s.labeling_dir / "outbox" / context.partition_key
    if not built["reissued"] or not (folder / "tasks.json").exists():
        folder = outbox.write_outbox(s.labeling_dir / "outbox", context.partition_key,
                                     built["queue"], built["champion_version"],
                                     s.signals.max_grade)
    return dg.MaterializeResult(metadata=readable(**{
        "dagster/row_count": built["tasks"], "tasks": dg.MetadataValue.int(built["tasks"]),
        "pool": built["pool"], "labelled_before": built["labelled_before"],
        "reissued": built["reissued"],
        "by_reason": built["by_reason"], "model_version": built["champion_version"] or "none",
        "outbox": dg.MetadataValue.path(str(folder))}))


@dg.asset(group_name="label", partitions_def=daily_partitions, pool="duckdb",
          kinds={"sklearn"}, deps=[gold_set, "champion_model"])
def human_audit(context: dg.AssetExecutionContext, flywheel: FlywheelResource):
    """Every `labeling.audit_every_days` days: a model trained on human labels only (the
    actively chosen examples, never gold) against the champion on the gold set (AUC of
    relevant vs not, paired bootstrap interval). A human-only model ahead raises an
    alert: the loop is optimising a proxy. Recorded in `label.audits`."""
    s = flywheel.settings
    day = context.partition_key
    with flywheel.warehouse() as conn:
        if not audit_lib.due(conn, day, s.labeling.audit_every_days):
            return dg.MaterializeResult(metadata={"verdict": "not due"})
        record = audit_lib.run_audit(conn, s, day)
        warehouse.replace_rows(conn, "label.audits", {"partition_date": day},
                               {"partition_date": day, **record})
        if record["verdict"] == "human-only model ahead":
            raise_alert(conn, Alert(
                key=f"audit:{day}", source="human_audit", severity="warning",
                title="A model of human labels only beats the champion on the gold set: "
                      "the loop may be optimising a proxy",
                details={k: v for k, v in record.items()}, partition_date=day),
                s.alert.webhook_url)
            note_backlog(context, alert_backlog(conn))  # for alert_delivery_sensor
    return dg.MaterializeResult(metadata=readable(**record))
