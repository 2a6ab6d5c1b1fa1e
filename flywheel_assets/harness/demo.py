"""``flywheel demo``: turn the wheel on the simulated world for N days.

Each day is three real Dagster runs on the instance in ``<data dir>/dagster_home``
(visible in ``make ui``): the world lands a day of traffic served by the champion, the
product's ``daily_rotation_job`` ingests, curates, trains, evaluates and decides, and
the oracle measures the champion against the hidden truth. The run's record goes to
``reports/demo_summary.json`` and a chart to ``reports/demo_quality.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from flywheel_assets.settings import Settings
from flywheel_assets.simulation import carousel
from flywheel_assets.simulation.config import PROFILES, Scenario, WorldConfig

GENERATED = ("landing", "warehouse.duckdb", "warehouse.duckdb.wal", "models", "reports",
             "world", "tmp", "labeling")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="turn the flywheel on the simulated world",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=14, help="simulated days (default 14)")
    p.add_argument("--profile", choices=PROFILES, default="default",
                   help="the product: default (a 10-slot media feed with graded signals) or "
                        "carousel (3 slots, a few dozen items, clicks only, anonymous "
                        "requests, a Thompson-sampling logging policy)")
    p.add_argument("--seed", type=int, default=WorldConfig.seed)
    p.add_argument("--requests-per-day", type=int,
                   help=f"default {WorldConfig.requests_per_day} (carousel: 10000)")
    p.add_argument("--users", type=int, help=f"default {WorldConfig.n_users}")
    p.add_argument("--items", type=int, help=f"default {WorldConfig.n_items} (carousel: 50)")
    p.add_argument("--epsilon", type=float,
                   help=f"exploration rate of the serving policy (default "
                        f"{WorldConfig.exploration_rate})")
    p.add_argument("--no-rerank", action="store_true",
                   help="serve the plain top-k (no diversity or popularity re-ranking); with --epsilon 0 "
                        "this is the greedy loop")
    p.add_argument("--scenario", action="append", default=[], metavar="NAME@DAY[-DAY]",
                   help="switch a scenario on, e.g. bot_attack@3-4, taste_drift@8 "
                        "(repeatable; one of taste_drift, catalog_drop, bot_attack, broken_client)")
    p.add_argument("--no-ips", action="store_true",
                   help="train on raw graded labels (no inverse-propensity weights)")
    p.add_argument("--no-profiles", action="store_true",
                   help="no profiles from feedback: the model learns from attributes only "
                        "(the ablation that measures what the loop's memory is worth)")
    p.add_argument("--no-filters", action="store_true",
                   help="curate by dedupe only (no bot, contradiction, cap or label-noise filters)")
    p.add_argument("--data-dir", help="defaults to FLYWHEEL_DATA_DIR, else ./data of the project")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    try:
        scenarios = tuple(Scenario.parse(s) for s in args.scenario)
    except ValueError as exc:
        print(f"flywheel demo: {exc}", file=sys.stderr)
        return 2
    overrides = {"training.ips": not args.no_ips, "curation.filters": not args.no_filters,
                 "profiles.enabled": not args.no_profiles}
    given = {name: value for name, value in (
        ("requests_per_day", args.requests_per_day), ("n_users", args.users),
        ("n_items", args.items), ("exploration_rate", args.epsilon)) if value is not None}
    if args.profile == carousel.PROFILE:
        # What the carousel product configures: its vocabulary, its value, its exploration.
        settings = Settings.from_env(args.data_dir, {**overrides, **carousel.PRODUCT_SETTINGS})
        config = carousel.carousel_config(seed=args.seed, start_date=settings.start_date,
                                          scenarios=scenarios, **given)
    else:
        if args.no_rerank:
            overrides |= {"serving.diversity": 0.0, "serving.popularity_balance": 0.0}
        settings = Settings.from_env(args.data_dir, overrides)
        # The world runs the product's serving system, configured as the product is.
        config = WorldConfig(seed=args.seed, start_date=settings.start_date,
                             rerank_diversity=settings.serving.diversity,
                             rerank_popularity_balance=settings.serving.popularity_balance,
                             scenarios=scenarios, **given)
    try:
        summary = run_demo(settings, config, args.days, progress=not args.quiet)
    except DemoRefused as exc:
        print(f"flywheel demo: {exc}", file=sys.stderr)
        return 2
    return 0 if summary["days"] else 1


class DemoRefused(ValueError):
    """The demo would mix an earlier world into the new one."""


def check_locations_are_empty(settings: Settings) -> None:
    """A demo starts from an empty world, and it empties only its data dir's own folders
    (:func:`reset_generated`). A landing zone, models or reports configured elsewhere (a
    bucket, a folder outside the data dir: `FLYWHEEL_*_URI`) are not the demo's to
    delete; holding anything, they would bring an earlier world's days, versions or
    champion pointer into this one. Refused, naming each."""
    held = []
    for area, location in (("landing", settings.landing), ("models", settings.models),
                           ("reports", settings.reports)):
        own = not location.remote and \
            location.cache.resolve() == (settings.data_dir / area).resolve()
        names = [] if own else location.list()
        if names:
            held.append(f"{area} at {location.where()} holds {', '.join(names[:3])}"
                        f"{' …' if len(names) > 3 else ''}")
    if held:
        raise DemoRefused(
            "the demo starts from an empty world but " + "; ".join(held) + ". These are "
            "not in the data dir, so the demo does not delete them: give it empty "
            "locations (a new prefix) or unset FLYWHEEL_LANDING_URI, FLYWHEEL_MODELS_URI "
            "and FLYWHEEL_REPORTS_URI")


def reset_generated(data_dir: Path) -> None:
    """A demo starts from an empty world; run history in dagster_home is kept."""
    for name in GENERATED:
        path = data_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _day_record(settings: Settings, date: str, oracle: dict, run_ok: bool) -> dict:
    from flywheel_assets import warehouse

    with warehouse.connect(settings.warehouse) as conn:
        counts = dict(conn.execute("""
            SELECT stream, sum(rows_read) FROM raw.landing_files WHERE partition_date = ?
            GROUP BY stream""", [date]).fetchall())
        accepted = sum(conn.execute(f"SELECT count(*) FROM raw.{t} WHERE partition_date = ?",
                                    [date]).fetchone()[0] for t in ("impressions", "interactions"))
        erased = conn.execute(
            "SELECT coalesce(sum(rows_erased), 0) FROM raw.landing_files WHERE partition_date = ? "
            "AND stream IN ('impressions', 'interactions')", [date]).fetchone()[0]
        quarantined = conn.execute(
            "SELECT count(*) FROM raw.quarantined_events WHERE partition_date = ? "
            "AND stream IN ('impressions', 'interactions')", [date]).fetchone()[0]
        promo = conn.execute("SELECT candidate_version, promoted, new_champion, reasons "
                             "FROM ml.promotions WHERE partition_date = ? AND actor = 'gate' "
                             "ORDER BY decided_at DESC LIMIT 1", [date]).fetchone()
        evaluation = conn.execute("SELECT metrics FROM ml.model_evaluations WHERE partition_date = ?",
                                  [date]).fetchone()
        drift_row = conn.execute("SELECT dataset_drift, columns FROM monitor.drift_reports "
                                 "WHERE partition_date = ?", [date]).fetchone()
        people = _labels_day(conn, date)
    metrics = json.loads(evaluation[0]) if evaluation else {}
    gold = metrics.get("gold") or {}
    slices = metrics.get("slices") or {}
    return {
        "date": date,
        "impressions": int(counts.get("impressions", 0)),
        "interactions": int(counts.get("interactions", 0)),
        "accepted": int(accepted),
        "quarantined": int(quarantined),
        "erased": int(erased),
        "candidate_version": promo[0] if promo else None,
        "promoted": bool(promo[1]) if promo else False,
        "champion_version": oracle["champion_version"],
        "oracle_ndcg_at_10": oracle["oracle_ndcg_at_10"],
        "oracle_regret_at_10": oracle["oracle_regret_at_10"],
        "popularity_oracle_ndcg_at_10": oracle["popularity_oracle_ndcg_at_10"],
        "k": metrics.get("k"),
        "candidate_holdout_ndcg_at_k": metrics.get("holdout", {}).get("candidate", {}).get("ndcg_at_k"),
        "champion_holdout_ndcg_at_k": metrics.get("holdout", {}).get("champion", {}).get("ndcg_at_k"),
        **{k: oracle.get(k) for k in ("bot_filter_precision", "bot_filter_recall",
                                      "position_bias_max_rel_error", "effective_sample_size",
                                      "exposure_gini", "catalog_coverage",
                                      "ope_rel_error_ips", "ope_rel_error_snips",
                                      "ope_rel_error_dr", "ope_effective_sample_size",
                                      "ope_requests")},
        # The holdout's cold-start slices (examined-only NDCG@K of the day's candidate
        # and champion, and how many requests they rest on).
        **{f"{name}_{model}_holdout_ndcg_at_k": (slices.get(name) or {}).get(model)
           for name in ("new_users", "new_items") for model in ("candidate", "champion")},
        **{f"{name}_holdout_requests": (slices.get(name) or {}).get("requests")
           for name in ("new_users", "new_items")},
        # The champion on the oracle's cold-start slices (fresh items, new users).
        **{k: oracle.get(k) for k in ("new_items_oracle_ndcg_at_10", "new_users_oracle_ndcg_at_10",
                                      "new_items_oracle_panel", "new_users_oracle_panel")},
        # The audience of a responsive world (simulation/engagement.py).
        **{k: oracle.get(k) for k in AUDIENCE},
        # People in the loop (label/): the day's queue, the labels that came back, the
        # gold set and what the champion scores on it, and the audit's verdict.
        **people,
        "champion_gold_auc": gold.get("champion"), "candidate_gold_auc": gold.get("candidate"),
        "decision": json.loads(promo[3]) if promo else ["rotation did not reach the gate"],
        "gate_decision": oracle.get("gate_decision"),
        "drift": _drift(drift_row),
        "rotation_succeeded": run_ok,
    }


def _labels_day(conn, date: str) -> dict:
    from flywheel_assets.label import gold as gold_lib
    from flywheel_assets.label import inbox

    requested, returned, quarantined = conn.execute("""
        SELECT (SELECT count(*) FROM label.labeling_queue WHERE partition_date = $d),
               (SELECT count(*) FROM label.annotations WHERE partition_date = $d),
               (SELECT count(*) FROM label.quarantined_labels WHERE partition_date = $d)""",
                                                    {"d": date}).fetchone()
    version = gold_lib.current_version(conn, date)
    size = conn.execute("SELECT count(*) FROM label.gold_set WHERE version = ?",
                        [version]).fetchone()[0] if version else 0
    audit = conn.execute("SELECT verdict FROM label.audits WHERE partition_date = ?",
                         [date]).fetchone()
    annotations = conn.execute("SELECT task_key, annotator, grade FROM label.annotations "
                               "WHERE partition_date <= ?", [date]).df()
    return {"labels_requested": int(requested), "labels_returned": int(returned),
            "labels_quarantined": int(quarantined), "gold_version": version,
            "gold_set_size": int(size), "annotator_agreement_alpha": inbox.agreement(annotations),
            "audit_verdict": audit[0] if audit else "not due"}


def labels_line(records: list[dict]) -> str:
    last = records[-1]
    audits = [f"{r['date']} {r['audit_verdict']}" for r in records
              if r.get("audit_verdict") not in (None, "not due")]
    return (f"{sum(r.get('labels_requested', 0) for r in records)} labels requested, "
            f"{sum(r.get('labels_returned', 0) for r in records)} returned, "
            f"{sum(r.get('labels_quarantined', 0) for r in records)} quarantined; gold set "
            f"{last.get('gold_set_size', 0)} ({last.get('gold_version') or 'none'}), champion "
            f"gold AUC {_fmt(last.get('champion_gold_auc'))}, annotator agreement alpha "
            f"{_fmt(last.get('annotator_agreement_alpha'))}; audits: "
            + ("; ".join(audits) or "none yet"))


AUDIENCE = ("active_users", "requests", "engagement_per_request", "monotony",
            "users_in_product", "churned_total", "joined_today")


def compounding(records: list[dict], from_day: int = 5) -> dict:
    """Does the wheel compound? The champion's oracle NDCG@10 per day, its slope over
    days ``from_day``..N, and the audience's first and last day."""
    from flywheel_assets.monitor.loop_health import slope

    quality = [r["oracle_ndcg_at_10"] for r in records]
    late = quality[from_day - 1:]
    out = {"oracle_ndcg_at_10_by_day": quality,
           "slope_from_day": from_day if len(late) >= 2 else None,
           "oracle_ndcg_slope_per_day": slope(late) if len(late) >= 2 else None}
    for key in ("active_users", "requests", "engagement_per_request"):
        values = [r.get(key) for r in records]
        if any(v is not None for v in values):
            out[f"{key}_by_day"] = values
    return out


def _chart(days: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(1, len(days) + 1))
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    ax.plot(x, [d["oracle_ndcg_at_10"] for d in days], marker="o", label="champion")
    ax.plot(x, [d["popularity_oracle_ndcg_at_10"] for d in days], linestyle="--",
            label="popularity baseline")
    promoted = [i for i, d in zip(x, days) if d["promoted"]]
    ax.scatter(promoted, [days[i - 1]["oracle_ndcg_at_10"] for i in promoted], s=90,
               facecolors="none", edgecolors="green", label="promotion")
    ax.set_xlabel("simulated day")
    ax.set_ylabel("oracle NDCG@10")
    ax.set_title("Champion quality against the hidden truth")
    ax.grid(alpha=0.3)
    ax.legend(loc="center right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _row(record: dict) -> str:
    return (f"{record['date']:<10} {record['impressions']:>7} {record['interactions']:>6} "
            f"{record['accepted']:>8} {record['quarantined']:>7} "
            f"{(record['candidate_version'] or '-'):<18} "
            f"{('yes' if record['promoted'] else 'no'):<8} "
            f"{record['champion_version']:<18} {record['oracle_ndcg_at_10']:>14.4f}")


def _drift(row) -> dict | None:
    """The day's drift verdict: whether it asked for a retrain (what drift_sensor acts
    on), and why."""
    if row is None:
        return None
    details = json.loads(row[1])
    return {"retrain": bool(row[0]), "drifted": bool(details.get("drifted")),
            "large": bool(details.get("large")), "persistent": bool(details.get("persistent")),
            "drifted_columns": details.get("drifted_columns", []),
            "reference_days": len(details.get("reference_days") or [])}


def decisions_table(records: list[dict]) -> list[dict]:
    """One row per test the gate made (the day's candidate, and the one awaiting
    confirmation): the outcome, the estimated difference with its interval and the true
    difference (the oracle's, on the same requests)."""
    rows = []
    for record in records:
        gate = record.get("gate_decision")
        if not gate:
            continue
        for test in gate["tests"]:
            rows.append({"date": record["date"], "outcome": gate["outcome"],
                         "promoted_version": gate["promoted_version"], **test})
    return rows


def decisions_lines(rows: list[dict]) -> list[str]:
    lines = [f"{'date':<10} {'outcome':<21} {'tested':<9} {'version':<18} "
             f"{'estimate [interval]':>28} {'true':>8}"]
    for r in rows:
        lines.append(f"{r['date']:<10} {r['outcome']:<21} {r['contender']:<9} "
                     f"{r['version']:<18} {r['estimated_difference']:>+8.4f} "
                     f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] {r['true_difference']:>+8.4f}")
    return lines


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run_demo(settings: Settings, config: WorldConfig, days: int, progress: bool = True) -> dict:
    """Run ``days`` rotations and return the summary (also written to reports/)."""
    import dagster as dg
    from tqdm import tqdm

    from flywheel_assets.definitions import build_definitions
    from flywheel_assets.harness import carousel_report
    from flywheel_assets.simulation import world
    from flywheel_assets.simulation.definitions import build_world_definitions

    started = time.perf_counter()
    data_dir = settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    check_locations_are_empty(settings)
    reset_generated(data_dir)
    os.environ["DAGSTER_HOME"] = str(settings.ensure_dagster_home())
    world.save_config(world.world_dir(data_dir), config)
    # The product behaves as ``settings`` say, whatever the environment of its runs.
    product = build_definitions(str(data_dir), overrides=settings.knobs())
    simulation = build_world_definitions(str(data_dir))
    rotation = product.resolve_job_def("daily_rotation_job")
    traffic_job = simulation.resolve_job_def("simulated_traffic_job")
    oracle_job = simulation.resolve_job_def("oracle_evaluation_job")

    is_carousel = config.profile == carousel.PROFILE
    print(f"Flywheel demo: {days} simulated days from {config.start_date} in {data_dir}")
    print(f"  world: profile {config.profile}, {config.n_users} users, {config.n_items} items, "
          f"{config.requests_per_day} "
          f"requests/day, slate {config.slate_size}, exploration {config.exploration_rate}, "
          f"re-ranking: diversity {config.rerank_diversity}, popularity balance "
          f"{config.rerank_popularity_balance}; "
          f"filters {'on' if settings.curation.filters else 'off'}, IPS {'on' if settings.training.ips else 'off'}"
          + (f", scenarios {', '.join(f'{s.name}@{s.first_day}' for s in config.scenarios)}"
             if config.scenarios else ""))
    if is_carousel:
        print("  product settings: " + ", ".join(f"{k}={v}" for k, v in carousel.PRODUCT_SETTINGS.items())
              + "; clicks per request are the value; the oracle knows every policy's truth")
    header = carousel_report.HEADER if is_carousel else (
        f"{'date':<10} {'impr':>7} {'inter':>6} {'accepted':>8} {'quarant':>7} "
        f"{'candidate':<18} {'promoted':<8} {'champion':<18} {'oracle NDCG@10':>14}")
    records: list[dict] = []
    from flywheel_assets.monitor.sensors import host_tag

    tags = {"flywheel/demo": "true", **host_tag()}
    # The full event log is in the instance (make ui); the console gets warnings only.
    quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    if settings.uses_development_secret:
        print(f"  warning: {settings.DEVELOPMENT_SECRET_WARNING}")
    with dg.DagsterInstance.get() as instance, \
            tqdm(total=days, disable=not progress, unit="day", leave=False) as bar:
        bar.write(header)
        for day in range(1, days + 1):
            date = config.date_of(day).isoformat()
            bar.set_description(f"{date}: traffic")
            traffic_job.execute_in_process(partition_key=date, instance=instance, tags=tags,
                                           run_config=quiet)
            bar.set_description(f"{date}: rotation")
            rotated = rotation.execute_in_process(partition_key=date, instance=instance,
                                                  tags=tags, run_config=quiet,
                                                  raise_on_error=False)
            bar.set_description(f"{date}: oracle")
            oracle_job.execute_in_process(partition_key=date, instance=instance, tags=tags,
                                          run_config=quiet)
            oracle = json.loads((world.world_dir(data_dir) / "oracle" / f"date={date}" /
                                 "oracle.json").read_text())
            record = (carousel_report.day_record if is_carousel else _day_record)(
                settings, date, oracle, rotated.success)
            records.append(record)
            bar.write((carousel_report.row(record) if is_carousel else _row(record))
                      + ("" if rotated.success else "  (rotation stopped: see the run in the UI)"))
            bar.update(1)

    wall = time.perf_counter() - started
    reports = settings.reports_dir
    reports.mkdir(parents=True, exist_ok=True)
    chart = reports / "demo_quality.png"
    if records and not is_carousel:
        _chart(records, chart)
    first, last = (records[0], records[-1]) if records else ({}, {})
    summary = {
        "data_dir": str(data_dir), "world": config.to_dict(), "wall_seconds": round(wall, 1),
        "use_filters": settings.curation.filters, "use_ips": settings.training.ips,
        "chart": str(chart),
        "final_champion": last.get("champion_version"),
        "promotions": sum(r["promoted"] for r in records),
        "drift_retrain_days": [r["date"] for r in records
                               if (r.get("drift") or {}).get("retrain")],
        "use_profiles": settings.profiles.enabled, "model": settings.training.model,
        "days": records,
    }
    figures, lines = carousel_report.summary(records) if is_carousel else ({}, [])
    summary |= figures
    if records and not is_carousel:
        summary["compounding"] = compounding(records)
    summary["decisions"] = decisions_table(records)
    (reports / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print()
    print(f"Summary: {len(records)} rotations, {summary['promotions']} promotions, "
          f"champion {summary['final_champion']}")
    for line in lines:
        print(line)
    if records and not is_carousel:
        print(f"  oracle NDCG@10: popularity policy on day 1 {first['popularity_oracle_ndcg_at_10']:.4f}"
              f" -> champion on day {len(records)} {last['oracle_ndcg_at_10']:.4f}")
        c = summary["compounding"]
        if c["oracle_ndcg_slope_per_day"] is not None:
            print(f"  compounding (profiles {'on' if settings.profiles.enabled else 'off'}): "
                  f"oracle NDCG@10 slope over days {c['slope_from_day']}-{len(records)} "
                  f"{c['oracle_ndcg_slope_per_day']:+.5f} per day")
        for name in ("new_users", "new_items"):
            truth_value = last.get(f"{name}_oracle_ndcg_at_10")
            if truth_value is not None:
                print(f"  {name.replace('_', ' ')} on day {len(records)}, against the truth: "
                      f"oracle NDCG@10 of the champion {truth_value:.4f} (panel "
                      f"{last.get(name + '_oracle_panel')} {name.split('_')[1]})")
            cand = last.get(f"{name}_candidate_holdout_ndcg_at_k")
            if cand is not None:
                print(f"  {name.replace('_', ' ')} on day {len(records)} (holdout NDCG@"
                      f"{last.get('k')} of the candidate, {last.get(name + '_holdout_requests')} "
                      f"requests): {cand:.4f}")
        if last.get("active_users") is not None:
            print(f"  audience: active users {first['active_users']} -> {last['active_users']}, "
                  f"requests {first['requests']} -> {last['requests']}, engagement per request "
                  f"{first['engagement_per_request']:.3f} -> {last['engagement_per_request']:.3f}, "
                  f"{last['churned_total']} churned in all")
        print("  people in the loop: " + labels_line(records))
        print(f"  rows: {sum(r['accepted'] for r in records)} accepted, "
              f"{sum(r['quarantined'] for r in records)} quarantined, "
              f"{sum(r['erased'] for r in records)} erased on deletion requests")
        print(f"  signal on day {len(records)}: bot filter precision "
              f"{_fmt(last['bot_filter_precision'])} recall {_fmt(last['bot_filter_recall'])}, "
              f"position-bias max error {_fmt(last['position_bias_max_rel_error'])}, "
              f"effective sample size {_fmt(last['effective_sample_size'], 0)}")
        judged = [r for r in records if r.get("ope_rel_error_dr") is not None]
        if judged:
            print(f"  off-policy estimate of each day's candidate vs its true value "
                  f"({len(judged)} days): relative error SNIPS max "
                  f"{max(r['ope_rel_error_snips'] for r in judged):.3f}, DR max "
                  f"{max(r['ope_rel_error_dr'] for r in judged):.3f}")
        print(f"  concentration of the champion's slates: exposure Gini "
              f"{_fmt(first['exposure_gini'])} -> {_fmt(last['exposure_gini'])}, catalogue "
              f"coverage {_fmt(first['catalog_coverage'])} -> {_fmt(last['catalog_coverage'])}")
    drifts = [r for r in records if r.get("drift")]
    if drifts and not is_carousel:
        asked = [r["date"] for r in drifts if r["drift"]["retrain"]]
        print(f"  drift: {len(asked)} of {len(drifts)} days compared asked drift_sensor for a "
              f"retrain{' (' + ', '.join(asked) + ')' if asked else ''}; "
              f"{sum(r['drift']['drifted'] for r in drifts)} drifted on a data column")
    if summary["decisions"]:
        print("  the gate's decisions against the truth (difference with the champion, or "
              "the incumbent):")
        for line in decisions_lines(summary["decisions"]):
            print("    " + line)
    print(f"  record: {reports / 'demo_summary.json'}")
    if not is_carousel:
        print(f"  chart:  {chart}")
    print(f"  runs, lineage and metadata: make ui  (DAGSTER_HOME={settings.dagster_home})")
    print(f"wall time: {wall:.1f} s")
    return summary
