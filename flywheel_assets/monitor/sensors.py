"""Sensors (docs/architecture.md, "Automation"): the loop reacts within minutes, not at the next daily run.

Every sensor reads what assets already wrote (landing markers, materialization
metadata, run status), never heavy statistics; uses a cursor and run keys so that one
report never triggers twice; and tags each run with its trigger and a reason a person
can read. Alerts are requested as `record_alert_job` runs, which wait for the warehouse
like every other writer. On a fresh cursor a sensor only looks back `monitor.sensor_lookback_seconds`,
so turning the UI on over old data does not replay its history.
"""

import datetime as dt
import json
import socket
import time

import dagster as dg

from flywheel_assets.jobs import daily_rotation_job, retrain_job
from flywheel_assets.monitor.alerts import Alert
from flywheel_assets.monitor.jobs import (ALERTS_PENDING, ALERTS_REPORTED, NEXT_DELIVERY_AT,
                                          REPORTED_AT, alert_run_config, deliver_alerts_job,
                                          record_alert_job)
from flywheel_assets.partitions import daily_partitions
from flywheel_assets.resources import FlywheelResource
from flywheel_assets.settings import Settings

# How often sensors tick is fixed when the definitions load (environment only).
TICK_SECONDS = Settings.from_env().monitor.sensor_interval_seconds
TRIGGER, REASON = "trigger", "flywheel/reason"
AFTER_ROTATION = "flywheel/after_rotation"
DELIVER_AFTER = "flywheel/deliver_after"
RUNNING = dg.DefaultSensorStatus.RUNNING
IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED,
               dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def _new_materializations(context, asset: str, lookback_seconds: float) -> list:
    """Materializations of ``asset`` after the cursor, oldest first."""
    after = int(context.cursor) if context.cursor else None
    records_filter = dg.AssetRecordsFilter(
        asset_key=dg.AssetKey(asset), after_storage_id=after,
        after_timestamp=None if after else time.time() - lookback_seconds)
    return context.instance.fetch_materializations(records_filter, limit=100,
                                                   ascending=True).records


def _rotation_done(context, day: str, since: float) -> int | None:
    """Storage id of the day's `flywheel_health` (the rotation's last asset, after the
    gate's decision and the drift report) materialised after ``since``, if any.

    A retrain waits for the day's rotation to finish: both write the day's training set
    and candidate, and a retrain racing the rotation would let one run's gate judge
    the other run's candidate."""
    records = context.instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("flywheel_health"), asset_partitions=[day],
        after_timestamp=since), limit=1, ascending=True).records
    return records[0].storage_id if records else None


def _rotating(context, day: str) -> bool:
    """Whether a rotation of the day is queued or running."""
    return bool(context.instance.get_runs(filters=dg.RunsFilter(
        job_name=daily_rotation_job.name, tags={"dagster/partition": day},
        statuses=IN_PROGRESS), limit=1))


def _latest_rotation(context, day: str) -> int:
    """Storage id of the day's latest `flywheel_health` (0 before any)."""
    records = context.instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("flywheel_health"), asset_partitions=[day]), limit=1).records
    return records[0].storage_id if records else 0


def _ready_after_rotation(context, asset: str, relevant,
                          lookback_seconds: float) -> tuple[list, str | None]:
    """New materializations of ``asset`` (after the cursor) whose metadata ``relevant``
    selects, each with its day and the storage id of the day's finished rotation, and the
    cursor to keep. Stops at the first whose day is still rotating: it is looked at
    again on the next tick."""
    cursor, ready = context.cursor, []
    for record in _new_materializations(context, asset, lookback_seconds):
        mat = record.asset_materialization
        if relevant(mat.metadata):
            rotation = _rotation_done(context, mat.partition, record.timestamp)
            if rotation is None:
                break  # the day's rotation is still running: look again next tick
            ready.append((record, mat.partition, rotation))
        cursor = str(record.storage_id)
    return ready, cursor


def _drifted(context, day: str) -> bool:
    """Whether the day's latest drift report found drift."""
    records = context.instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("drift_report"), asset_partitions=[day]), limit=1).records
    meta = records[0].asset_materialization.metadata if records else {}
    return bool(meta.get("dataset_drift") and meta["dataset_drift"].value)


def _retrain(context, day: str, key: str, trigger: str, reason: str, window_days: int,
             holdout_share: float, after_rotation: int, alert: Alert) -> list[dg.RunRequest]:
    """A retrain of the partition (unless another sensor already asked for one after the
    same rotation) and an alert."""
    tags = {TRIGGER: trigger, REASON: reason, AFTER_ROTATION: str(after_rotation)}
    requests = [dg.RunRequest(job_name=record_alert_job.name, run_key=f"alert:{key}",
                              tags={TRIGGER: trigger, REASON: reason},
                              run_config=alert_run_config(alert))]
    already = context.instance.get_runs(filters=dg.RunsFilter(
        job_name=retrain_job.name,
        tags={"dagster/partition": day, AFTER_ROTATION: str(after_rotation)}), limit=1)
    if not already:
        requests.insert(0, dg.RunRequest(
            job_name=retrain_job.name, partition_key=day, run_key=f"retrain:{key}", tags=tags,
            run_config={"ops": {"training_set": {"config": {
                "window_days": window_days, "holdout_share": holdout_share}}}}))
    return requests


@dg.sensor(job=daily_rotation_job, minimum_interval_seconds=TICK_SECONDS,
           default_status=RUNNING,
           description="A landing day whose required streams all have `_SUCCESS` and that "
                       "was not ingested since → one rotation of that partition "
                       "(trigger=landing).")
def landing_sensor(context: dg.SensorEvaluationContext, flywheel: FlywheelResource):
    s = flywheel.settings
    landing, first = s.landing, s.ingest.required_streams[0]
    if not landing.is_dir(first):
        return dg.SkipReason(f"no landing folder {landing.where(first)} yet")
    # Cursor: the landing time of each day already requested, so a day is requested
    # once per landing (a re-landed day, with newer markers, is requested again).
    requested = json.loads(context.cursor) if context.cursor else {}
    last_partition = daily_partitions.get_last_partition_key()
    # One listing per required stream: {date=<day>: when its marker landed}.
    markers = [landing.stamps(stream, "_SUCCESS") for stream in s.ingest.required_streams]
    requests = []
    for name in sorted(markers[0]):
        day = name.removeprefix("date=")
        try:
            date = dt.date.fromisoformat(day)
        except ValueError:
            continue
        if not name.startswith("date="):
            continue
        if date < s.start_date or day > last_partition or not all(name in m for m in markers):
            continue  # outside the partitions (today's is not complete), or not landed
        landed = max(m[name] for m in markers)
        if requested.get(day, 0) >= landed:
            continue
        ingested = context.instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("raw_impressions"), asset_partitions=[day]), limit=1).records
        requested[day] = landed
        if ingested and ingested[0].timestamp >= landed:
            continue  # the schedule, the demo or a person got there first
        requests.append(dg.RunRequest(
            partition_key=day, run_key=f"landing:{day}:{landed:.0f}",
            tags={TRIGGER: "landing", REASON: f"landing day {day} complete (_SUCCESS in "
                                              f"{', '.join(s.ingest.required_streams)})"}))
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(requested, sort_keys=True),
                           skip_reason=None if requests else "no new complete landing day")


@dg.sensor(jobs=[retrain_job, record_alert_job], minimum_interval_seconds=TICK_SECONDS,
           default_status=RUNNING,
           description="A `drift_report` that asks for a retrain (a data column past its "
                       "calibrated threshold, by a large margin or two days in a row) → "
                       "`retrain_job` on the recent days only (trigger=drift) and an alert.")
def drift_sensor(context: dg.SensorEvaluationContext, flywheel: FlywheelResource):
    s = flywheel.settings
    ready, cursor = _ready_after_rotation(
        context, "drift_report", lambda meta: "dataset_drift" in meta and meta["dataset_drift"].value,
        s.monitor.sensor_lookback_seconds)
    requests = []
    for record, day, rotation in ready:
        meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
        why = ("large" if meta.get("large") else
               f"persisting {s.drift.persist_days} days" if meta.get("persistent") else "drift")
        reason = (f"drift on {day} ({why}): {meta.get('drifted_columns')}; drift share "
                  f"{meta['drift_share']:.2f}")
        key = f"drift:{day}:{record.storage_id}"
        requests += _retrain(context, day, key, "drift", reason, s.drift.retrain_window_days,
                             s.drift.retrain_holdout_share, rotation, Alert(
            key=key, source="drift_sensor", severity="warning",
            title=f"data drift on {day}: retraining on the last "
                  f"{s.drift.retrain_window_days} days",
            details=meta, partition_date=day))
    return dg.SensorResult(run_requests=requests, cursor=cursor,
                           skip_reason=None if requests else "no new drifted report (or the "
                                                             "day's rotation is still running)")


@dg.sensor(jobs=[retrain_job, record_alert_job], minimum_interval_seconds=TICK_SECONDS,
           default_status=RUNNING,
           description="Online quality (engagement per request, from `curated_feedback` "
                       "metadata) below `quality.drop_ratio` of its trailing mean → "
                       "`retrain_job` (trigger=quality) and an alert.")
def quality_sensor(context: dg.SensorEvaluationContext, flywheel: FlywheelResource):
    s = flywheel.settings
    ready, cursor = _ready_after_rotation(
        context, "curated_feedback", lambda meta: "engagement_per_request" in meta,
        s.monitor.sensor_lookback_seconds)
    requests = []
    for record, day, rotation in ready:
        value = record.asset_materialization.metadata["engagement_per_request"]
        earlier = context.instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("curated_feedback"), before_storage_id=record.storage_id),
            limit=10 * s.quality.baseline_days).records
        latest_per_day = {}
        for r in earlier:  # newest first: keep each day's latest value
            p = r.asset_materialization.partition
            if p < day and p not in latest_per_day and "engagement_per_request" in \
                    r.asset_materialization.metadata:
                latest_per_day[p] = r.asset_materialization.metadata["engagement_per_request"].value
        baseline_days = sorted(latest_per_day)[-s.quality.baseline_days:]
        if len(baseline_days) < 2:
            continue
        baseline = sum(latest_per_day[d] for d in baseline_days) / len(baseline_days)
        if value.value >= s.quality.drop_ratio * baseline:
            continue
        reason = (f"engagement per request {value.value:.3f} on {day} < "
                  f"{s.quality.drop_ratio:.0%} of its trailing mean {baseline:.3f} "
                  f"({baseline_days[0]} .. {baseline_days[-1]})")
        key = f"quality:{day}:{record.storage_id}"
        alert = Alert(
            key=key, source="quality_sensor", severity="warning",
            title=f"online quality dropped on {day}", partition_date=day,
            details={"engagement_per_request": value.value, "baseline": baseline,
                     "baseline_days": baseline_days})
        if _drifted(context, day):
            # The drift sensor owns the retrain of a drifted day (on the recent days);
            # a second, full-window retrain would only race it.
            requests.append(dg.RunRequest(job_name=record_alert_job.name, run_key=f"alert:{key}",
                                          tags={TRIGGER: "quality", REASON: reason},
                                          run_config=alert_run_config(alert)))
            continue
        requests += _retrain(context, day, key, "quality", reason, s.training.window_days, 0.0,
                             rotation, alert)
    return dg.SensorResult(run_requests=requests, cursor=cursor,
                           skip_reason=None if requests else "no quality drop (or the day's "
                                                             "rotation is still running)")


@dg.run_failure_sensor(request_job=record_alert_job, default_status=RUNNING,
                       minimum_interval_seconds=TICK_SECONDS,
                       description="A failed run → a critical alert in `monitor.alerts` "
                                   "(and the webhook), naming the job, partition and error.")
def run_failure_alert_sensor(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    if run.job_name in (record_alert_job.name, deliver_alerts_job.name):
        return dg.SkipReason("an alert run failed; not alerting about alerting")
    day = run.tags.get("dagster/partition")
    error = context.failure_event.message or "run failed"
    key = f"run_failure:{run.run_id}"
    return dg.RunRequest(run_key=f"alert:{key}", tags={
        TRIGGER: "run_failure", REASON: f"run {run.run_id[:8]} of {run.job_name} failed"},
        run_config=alert_run_config(Alert(
            key=key, source="run_failure_alert_sensor", severity="critical",
            title=f"{run.job_name} failed" + (f" for {day}" if day else ""),
            details={"error": error[:2000], "trigger": run.tags.get(TRIGGER)},
            partition_date=day, run_id=run.run_id)))


@dg.sensor(jobs=[retrain_job], minimum_interval_seconds=TICK_SECONDS,
           default_status=RUNNING,
           description="`labeling.retrain_after_labels` new human labels imported outside the "
                       "daily rotation (`human_labels` materialised on its own) since the last "
                       "retrain it asked for → `retrain_job` on that day (trigger=labels): "
                       "labelled rows learn people's grades.")
def labels_sensor(context: dg.SensorEvaluationContext, flywheel: FlywheelResource):
    s = flywheel.settings
    state = json.loads(context.cursor) if context.cursor else {"after": None, "pending": 0}
    records = context.instance.fetch_materializations(dg.AssetRecordsFilter(
        asset_key=dg.AssetKey("human_labels"), after_storage_id=state["after"],
        after_timestamp=None if state["after"] else time.time() - s.monitor.sensor_lookback_seconds),
        limit=100, ascending=True).records
    requests = []
    for record in records:
        mat = record.asset_materialization
        run = context.instance.get_run_by_id(record.run_id)
        # A rotation imports the day's labels before its own training set: only labels
        # imported by other runs (the UI, a backfill of human_labels) wait for training.
        trained = run is not None and run.job_name == daily_rotation_job.name
        pending = state["pending"] + (int(mat.metadata["new_labels"].value)
                                      if "new_labels" in mat.metadata and not trained else 0)
        if pending >= s.labeling.retrain_after_labels:
            day = mat.partition
            if _rotating(context, day):
                break  # the day's rotation is running: look again next tick
            rotation = _latest_rotation(context, day)
            already = context.instance.get_runs(filters=dg.RunsFilter(
                job_name=retrain_job.name,
                tags={"dagster/partition": day, AFTER_ROTATION: str(rotation)}), limit=1)
            if not already:
                reason = (f"{pending} new human labels since the last labels retrain "
                          f"(threshold {s.labeling.retrain_after_labels})")
                requests.append(dg.RunRequest(
                    job_name=retrain_job.name, partition_key=day,
                    run_key=f"labels:{day}:{record.storage_id}",
                    tags={TRIGGER: "labels", REASON: reason, AFTER_ROTATION: str(rotation)}))
            pending = 0
        state = {"after": record.storage_id, "pending": pending}
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(state),
                           skip_reason=None if requests else
                           f"{state['pending']} new human labels (retrain at "
                           f"{s.labeling.retrain_after_labels})")


# Launchers whose run workers are processes of this host: their pid can be looked up.
SAME_HOST_LAUNCHERS = ("DefaultRunLauncher", "SyncInMemoryRunLauncher")
HOST_TAG = "flywheel/host"


def host_tag() -> dict[str, str]:
    """The tag of a run this process executes itself (the CLI, the demo): which host's
    pids its events carry."""
    return {HOST_TAG: socket.gethostname()}


def _pids(instance: dg.DagsterInstance, run_id: str) -> list[int]:
    """The run worker's pid (its last start event), then those of steps started and not
    finished (under the multiprocess executor each step is a process of its own, and may
    outlive a killed run worker)."""
    starts = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START)
    worker = [e.dagster_event.pid for e in starts if e.dagster_event and e.dagster_event.pid]
    steps = {}
    for e in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_START,
                                                dg.DagsterEventType.STEP_SUCCESS,
                                                dg.DagsterEventType.STEP_FAILURE}):
        event = e.dagster_event
        if event and event.step_key:
            steps[event.step_key] = (event.pid if event.event_type == dg.DagsterEventType.STEP_START
                                     else None)
    return worker[-1:] + [pid for pid in steps.values() if pid]


def _alive(pid: int, started: float | None) -> bool:
    """The process is there, not a zombie, and not a later process given the same pid
    (one that cannot be inspected counts as alive: nothing is swept on a guess)."""
    import psutil

    try:
        process = psutil.Process(pid)
        return (process.status() != psutil.STATUS_ZOMBIE
                and process.create_time() <= (started or time.time()) + 1.0)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def dead_runs(instance: dg.DagsterInstance) -> list[tuple[dg.DagsterRun, int]]:
    """Runs the instance holds as started whose run worker (the pid of its start event)
    is gone, and no step process of theirs is left: killed with SIGKILL, or the machine
    restarted. A run executed on another host (its `flywheel/host` tag) is not judged."""
    here, out = socket.gethostname(), []
    for record in instance.get_run_records(
            dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        run = record.dagster_run
        if run.tags.get(HOST_TAG, here) != here:
            continue
        pids = _pids(instance, run.run_id)
        if pids and not any(_alive(pid, record.start_time) for pid in pids):
            out.append((run, pids[0]))
    return out


def sweep_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark each dead run failed and free its pool slots (a dead run would keep the
    `duckdb` slot, and every later run would wait for it forever). The failure reaches
    `run_failure_alert_sensor` like any other. Returns the run ids swept."""
    swept = []
    for run, pid in dead_runs(instance):
        # It may have finished since it was listed: a success is never turned to failure.
        if instance.get_run_by_id(run.run_id).status != dg.DagsterRunStatus.STARTED:
            continue
        instance.report_run_failed(run, (
            f"the run worker (pid {pid}) is gone without a word (killed, or its machine "
            "restarted): marked failed by dead_run_sweeper, its pool slots freed; replay "
            "the partition"))
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        swept.append(run.run_id)
    return swept


@dg.sensor(minimum_interval_seconds=TICK_SECONDS, default_status=RUNNING,
           description="A run whose worker process is gone (killed with SIGKILL, the machine "
                       "restarted) but which the instance still holds as started → marked "
                       "failed, its pool slots freed (else every later run waits for the "
                       "`duckdb` slot), and alerted by run_failure_alert_sensor. Runs on this "
                       "host's launchers only; a launcher that runs workers elsewhere has "
                       "Dagster's run monitoring.")
def dead_run_sweeper(context: dg.SensorEvaluationContext):
    launcher = type(context.instance.run_launcher).__name__
    if launcher not in SAME_HOST_LAUNCHERS:
        return dg.SkipReason(f"{launcher} runs workers elsewhere: their pids mean nothing here")
    swept = sweep_dead_runs(context.instance)
    return dg.SkipReason("marked failed (worker gone): " + ", ".join(swept) if swept
                         else "every started run has its worker")


# The runs that said what alerts are left, newest created first, among which the
# latest reading is believed.
ALERT_RUNS_LOOKED_AT = 20


@dg.sensor(jobs=[deliver_alerts_job], minimum_interval_seconds=TICK_SECONDS,
           default_status=RUNNING,
           description="Alerts the webhook has not taken yet (down, slow, 5xx) → "
                       "`deliver_alerts_job` when the next try is due (tries back off from "
                       "`alert.retry_seconds`, doubling, up to `alert.max_attempts`); a "
                       "delivery run that failed is tried again, backing off the same way.")
def alert_delivery_sensor(context: dg.SensorEvaluationContext, flywheel: FlywheelResource):
    s = flywheel.settings.alert
    if s.webhook_url is None:
        return dg.SkipReason("no webhook is configured (FLYWHEEL_ALERT_WEBHOOK_URL)")
    if context.instance.get_runs(filters=dg.RunsFilter(
            job_name=deliver_alerts_job.name, statuses=IN_PROGRESS), limit=1):
        return dg.SkipReason("a delivery run is on its way")
    # What is left to send, as the latest reading of it says (a run tags it when it
    # reads it: an alert run at its end, a rotation's human_audit half-way).
    reported = context.instance.get_runs(filters=dg.RunsFilter(
        tags={ALERTS_REPORTED: "reported"}), limit=ALERT_RUNS_LOOKED_AT)
    latest = max(reported, key=lambda r: float(r.tags.get(REPORTED_AT) or 0.0), default=None)
    read_at = float(latest.tags.get(REPORTED_AT) or 0.0) if latest else 0.0
    pending = int(latest.tags.get(ALERTS_PENDING, "0")) if latest else 0
    due = float(latest.tags[NEXT_DELIVERY_AT]) if pending else None
    # Alert runs that failed since that reading (a record or delivery run killed or
    # refused by the warehouse) may have left alerts unsent: ask again, backing off.
    failed = [r for r in context.instance.get_run_records(filters=dg.RunsFilter(
        tags={"flywheel/kind": "alert"},
        statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED],
        updated_after=dt.datetime.fromtimestamp(read_at, dt.timezone.utc)), limit=100)
        if (r.end_time or 0.0) > read_at]
    if not pending and not failed:
        return dg.SkipReason("no alert waits for the webhook")
    if failed:
        last_end = max(r.end_time or 0.0 for r in failed)
        wait = min(s.retry_seconds * 2.0 ** min(len(failed) - 1, 20), 86400.0)
        due = max(due or 0.0, last_end + wait)
    if time.time() < due:
        return dg.SkipReason(f"the next try is due at "
                             f"{dt.datetime.fromtimestamp(due, dt.timezone.utc):%H:%M:%S} UTC")
    after = latest.run_id if latest else "none"
    return dg.RunRequest(run_key=f"deliver-after:{after}:{len(failed)}", tags={
        TRIGGER: "alert_retry", DELIVER_AFTER: after,
        REASON: f"alerts left unsent (read by run {after[:8]}"
                + (f"; {len(failed)} alert run(s) failed since" if failed else "") + ") are due"})


SENSORS = [landing_sensor, drift_sensor, quality_sensor, labels_sensor, run_failure_alert_sensor,
           dead_run_sweeper, alert_delivery_sensor]
