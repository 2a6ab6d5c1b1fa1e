"""Benchmarks on the simulated world, each the same world run twice, in separate data
directories, one after the other (so the two runs do not share the machine's cores).

``flywheel benchmark signal``: does a valid signal make a better wheel? The full loop
(curation filters and inverse-propensity weights) against the naive loop
(``--no-ips --no-filters``): the last day's oracle NDCG@10 of both and the
signal-validity figures.

``flywheel benchmark gate``: the gate's error rates against the world's truth (A/A false
promotions per 365 rotations, power, coverage of the difference; `gate_benchmark`).

``flywheel benchmark target``: which training target makes the better model, on the
training sets of a finished demo run (`target_benchmark`; ``--days N``: N of its days).

``flywheel benchmark loops``: does the guarded loop avoid a degenerate feedback loop?
The guarded loop (the default: exploration 0.1, diversity re-ranking) against the greedy
loop (``--epsilon 0 --no-rerank``) in the responsive world (users come back as they are
served well and varied): active users, requests and engagement per request beside
oracle NDCG@10, catalogue coverage and exposure Gini, on day 1 and on the last day
(default 28 days).

``flywheel benchmark compounding``: what the loop's memory is worth. The same world run
with profiles from feedback (the default) and without (``--no-profiles``): the
champion's oracle NDCG@10 per day for both, the difference per day, and the slope from
day 5; a chart. ``--profile carousel``: the carousel product instead (the true clicks
per request of each day's candidate: its gate holds nearly all of them).

``flywheel benchmark profiles``: seconds and peak memory of one day's profiles, on a
finished run's warehouse (``--from-run``) or a synthetic one (``--impressions-per-day``;
`profile_cost`).

``flywheel benchmark cold-start --from-run DIR[,DIR]``: each finished run's last
champion (and the popularity policy) against the truth on the cold-start slices: the
oracle's panel ranking pools of items at most 7 days old, and the users who joined in
the last 14 days ranking ordinary pools (`simulation/oracle.cold_start`).

``flywheel benchmark labels --noise P``: human labels needed to reach a target gold-set
accuracy with active selection vs random selection (`labels_benchmark`).

``flywheel benchmark poisoning``: a bot ring of 5% of the users pushing five items,
with the ``bot_attack`` scenario on the later days: where the champion in service ranks
the ring's targets (and a matched control set) each day, with the product's bot
defences on and switched off by settings overrides (`poisoning`).

``flywheel benchmark rotation --impressions N``: one full rotation of a day of N
impressions (default 1M) through Dagster and from a plain loop of the same steps (the
floor): seconds per stage, rows per second, peak memory, the ratio
(`rotation_benchmark`).

``--jobs 2`` runs the two arms of loops, signal, compounding and poisoning side by side,
each in its own process (its log in its directory).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from flywheel_assets.harness import (backfill_benchmark, gate_benchmark, labels_benchmark,
                                     poisoning, profile_cost, rotation_benchmark,
                                     target_benchmark)
from flywheel_assets.settings import Settings
from flywheel_assets.simulation.config import WorldConfig

FIGURES = ("oracle_ndcg_at_10", "bot_filter_precision", "bot_filter_recall",
           "position_bias_max_rel_error", "effective_sample_size")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("benchmark", help="benchmarks on the simulated world",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=["signal", "loops", "gate", "target", "compounding",
                                    "profiles", "cold-start", "labels", "rotation", "poisoning",
                                    "backfill"],
                   help="signal: full loop vs --no-ips --no-filters; "
                        "loops: guarded loop vs --epsilon 0 --no-rerank; "
                        "compounding: profiles from feedback vs --no-profiles; "
                        "profiles: seconds and peak memory of a day's profiles; "
                        "cold-start: finished runs' champions on fresh items and new users; "
                        "gate: the gate's error rates against the truth; "
                        "target: training targets compared on a finished demo run; "
                        "labels: human labels needed with active vs random selection; "
                        "rotation: one rotation at volume, Dagster vs a plain loop; "
                        "poisoning: a bot ring's targets in the champion's rankings, "
                        "bot defences on vs off; "
                        "backfill: days rotated one after another vs flywheel backfill "
                        "--parallel P, on lakes")
    p.add_argument("--profile", choices=["default", "carousel"], default="default",
                   help="compounding: the product to run (default: the media feed)")
    p.add_argument("--days", type=int, help="simulated days (default: 14 for signal, "
                                            "poisoning and compounding, 28 for loops, 6 "
                                            "decision days per world for gate); "
                                            "target: how many of the run's days (default all)")
    p.add_argument("--seed", type=int, default=WorldConfig.seed)
    p.add_argument("--data-dir", help="runs go to <data dir>/benchmarks/<name>/{full,naive}")
    gate_benchmark.add_arguments(p)
    profile_cost.add_arguments(p)
    labels_benchmark.add_arguments(p)
    rotation_benchmark.add_arguments(p)
    poisoning.add_arguments(p)
    backfill_benchmark.add_arguments(p)
    p.set_defaults(func=_main)


def _fmt(value) -> str:
    return "-" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def _main(args: argparse.Namespace) -> int:
    return {"loops": _loops, "signal": _signal, "gate": gate_benchmark.main,
            "target": target_benchmark.main, "compounding": _compounding,
            "profiles": profile_cost.main, "cold-start": _cold_start,
            "labels": labels_benchmark.main, "rotation": rotation_benchmark.main,
            "poisoning": poisoning.main, "backfill": backfill_benchmark.main}[args.name](args)


def _arm(data_dir: str, overrides: dict, config: WorldConfig, days: int, log: bool) -> dict:
    """One run of the demo (a benchmark's arm); its console output to ``demo.log`` in
    its directory when ``log``."""
    from flywheel_assets.harness.demo import run_demo

    settings = Settings.from_env(data_dir, overrides)
    if not log:
        return run_demo(settings, config, days, progress=False)
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(data_dir) / "demo.log", "w") as out, contextlib.redirect_stdout(out):
        return run_demo(settings, config, days, progress=False)


def run_arms(arms: dict[str, tuple[Path, dict, WorldConfig]], days: int,
             jobs: int = 1) -> dict[str, dict]:
    """Each arm's demo summary: one after the other, or ``jobs`` at a time, each in a
    fresh process with one BLAS thread (two arms on two cores do not fight for them)."""
    if jobs <= 1:
        return {label: _arm(str(d), o, c, days, False) for label, (d, o, c) in arms.items()}
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {label: pool.submit(_arm, str(d), o, c, days, True)
                   for label, (d, o, c) in arms.items()}
        return {label: f.result() for label, f in futures.items()}


LOOP_FIGURES = ("active_users", "requests", "engagement_per_request", "oracle_ndcg_at_10",
                "catalog_coverage", "exposure_gini", "churned_total")


def _loops(args: argparse.Namespace) -> int:
    days = args.days or 28
    base = Settings.from_env(args.data_dir).data_dir / "benchmarks" / "loops"
    arms = {}
    for label, epsilon, rerank in (("guarded", WorldConfig.exploration_rate, True),
                                   ("greedy", 0.0, False)):
        overrides = {} if rerank else {"serving.diversity": 0.0,
                                       "serving.popularity_balance": 0.0}
        settings = Settings.from_env(base / label, overrides)
        config = WorldConfig(seed=args.seed, start_date=settings.start_date,
                             exploration_rate=epsilon,
                             rerank_diversity=settings.serving.diversity,
                             rerank_popularity_balance=settings.serving.popularity_balance)
        arms[label] = (base / label, overrides, config)
    results = {}
    for label, summary in run_arms(arms, days, getattr(args, "jobs", 1) or 1).items():
        results[label] = {"first_day": summary["days"][0], "last_day": summary["days"][-1],
                          "promotions": summary["promotions"],
                          "wall_seconds": summary["wall_seconds"],
                          "by_day": {k: [d.get(k) for d in summary["days"]]
                                     for k in LOOP_FIGURES}}
    (base / "result.json").write_text(json.dumps(results, indent=2))
    print()
    print(f"benchmark loops: {days} days, seed {args.seed}, results in {base / 'result.json'}")
    print(f"{'figure':<32} {'guarded loop':>14} {'greedy loop':>14}")
    for key in LOOP_FIGURES:
        for when in ("first_day", "last_day"):
            print(f"{key + (' day 1' if when == 'first_day' else f' day {days}'):<32} "
                  + "".join(f"{_fmt(results[k][when][key]):>15}" for k in ("guarded", "greedy")))
    for k in ("guarded", "greedy"):
        ratio = results[k]["last_day"]["catalog_coverage"] / results[k]["first_day"]["catalog_coverage"]
        results[k]["coverage_kept"] = ratio
    print(f"{'coverage day ' + str(days) + ' / day 1':<32} "
          + "".join(f"{results[k]['coverage_kept']:>15.4f}" for k in ("guarded", "greedy")))
    print(f"{'promotions':<32} " + "".join(f"{results[k]['promotions']:>15}" for k in ("guarded", "greedy")))
    print(f"on day {days}, higher is better except exposure_gini and churned_total:")
    for key in LOOP_FIGURES:
        g, r = (results[k]["last_day"].get(key) for k in ("guarded", "greedy"))
        if g is None or r is None:
            continue
        lower_better = key in ("exposure_gini", "churned_total")
        winner = "tie" if g == r else ("guarded" if (g < r) == lower_better else "greedy")
        print(f"  {key:<28} {winner}")
    return 0


def _compounding(args: argparse.Namespace) -> int:
    """Profiles on and off on the same world, side by side per day."""
    from flywheel_assets.monitor.loop_health import slope
    from flywheel_assets.simulation import carousel

    days = args.days or 14
    base = Settings.from_env(args.data_dir).data_dir / "benchmarks" / "compounding" / args.profile
    arms = {}
    for label, profiles in (("profiles", True), ("no_profiles", False)):
        overrides = {"profiles.enabled": profiles}
        if args.profile == carousel.PROFILE:
            overrides |= carousel.PRODUCT_SETTINGS
            settings = Settings.from_env(base / label, overrides)
            config = carousel.carousel_config(seed=args.seed, start_date=settings.start_date)
        else:
            settings = Settings.from_env(base / label, overrides)
            config = WorldConfig(seed=args.seed, start_date=settings.start_date)
        arms[label] = (base / label, overrides, config)
    summaries = run_arms(arms, days, getattr(args, "jobs", 1) or 1)
    # The carousel's gate held every candidate of its 14-day runs (its Thompson-sampling
    # logger rarely supports them), so its champion says little about the model: each
    # day's candidate, valued by the truth, does.
    figure = ("true_value_candidate" if args.profile == carousel.PROFILE else "oracle_ndcg_at_10")
    curves = {label: [d.get(figure) for d in s["days"]] for label, s in summaries.items()}
    diff = [None if a is None or b is None else a - b
            for a, b in zip(curves["profiles"], curves["no_profiles"])]
    late = [d for d in diff[4:] if d is not None]
    result = {"profile": args.profile, "days": days, "figure": figure, "curves": curves,
              "difference": diff,
              "mean_difference_from_day_5": sum(late) / len(late) if late else None,
              "slope_from_day_5": {k: slope(v[4:]) for k, v in curves.items()},
              "wall_seconds": {k: s["wall_seconds"] for k, s in summaries.items()}}
    base.mkdir(parents=True, exist_ok=True)
    (base / "result.json").write_text(json.dumps(result, indent=2))
    _compounding_chart(result, base / "compounding.png")
    print()
    print(f"benchmark compounding: {args.profile} product, {days} days, seed {args.seed}, "
          f"results in {base / 'result.json'}, chart {base / 'compounding.png'}")
    print(f"{'day':>4} {'profiles':>10} {'no profiles':>12} {'difference':>11}")
    for day, (a, b, d) in enumerate(zip(curves["profiles"], curves["no_profiles"], diff), 1):
        print(f"{day:>4} {_fmt(a):>10} {_fmt(b):>12} {('-' if d is None else f'{d:+.4f}'):>11}")
    for label, value in result["slope_from_day_5"].items():
        print(f"slope of {figure} over days 5-{days}, {label}: "
              + ("-" if value is None else f"{value:+.5f} per day"))
    if late:
        print(f"mean difference over days 5-{days}: {result['mean_difference_from_day_5']:+.4f}")
    return 0


def _compounding_chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    for label, name in (("profiles", "with profiles from feedback"),
                        ("no_profiles", "without (--no-profiles)")):
        curve = result["curves"][label]
        ax.plot(range(1, len(curve) + 1), curve, marker="o", label=name)
    ax.set_xlabel("days of data")
    ax.set_ylabel("oracle NDCG@10 of the champion" if result["figure"] == "oracle_ndcg_at_10"
                  else "true clicks per request of the day's candidate")
    ax.set_title(f"Does the wheel compound? ({result['profile']} product)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _signal(args: argparse.Namespace) -> int:
    args.days = args.days or 14
    base = Settings.from_env(args.data_dir).data_dir / "benchmarks" / args.name
    arms = {}
    for label, switches in (("full", {}), ("naive", {"training.ips": False,
                                                             "curation.filters": False})):
        settings = Settings.from_env(base / label, switches)
        arms[label] = (base / label, switches,
                       WorldConfig(seed=args.seed, start_date=settings.start_date))
    results = {label: {"last_day": summary["days"][-1], "wall_seconds": summary["wall_seconds"]}
               for label, summary in run_arms(arms, args.days,
                                              getattr(args, "jobs", 1) or 1).items()}
    (base / "result.json").write_text(json.dumps(results, indent=2))
    print()
    print(f"benchmark signal: {args.days} days, seed {args.seed}, results in {base / 'result.json'}")
    print(f"{'figure (last day)':<30} {'full loop':>12} {'naive loop':>12}")
    for key in FIGURES:
        print(f"{key:<30} {_fmt(results['full']['last_day'][key]):>12} "
              f"{_fmt(results['naive']['last_day'][key]):>12}")
    print(f"{'wall_seconds':<30} {results['full']['wall_seconds']:>12} {results['naive']['wall_seconds']:>12}")
    full, naive = (results[k]["last_day"]["oracle_ndcg_at_10"] for k in ("full", "naive"))
    print(f"oracle NDCG@10 full / naive = {full / naive:.4f}")
    return 0


def _cold_start(args: argparse.Namespace) -> int:
    import datetime as dt

    from flywheel_assets.serve.serving import model_policy, popularity_policy
    from flywheel_assets.simulation import oracle, world
    from flywheel_assets.train import model_store

    if not args.from_run:
        raise SystemExit("flywheel benchmark cold-start: name finished runs with --from-run "
                         "DIR[,DIR]")
    print(f"{'run':<60} {'slice':<10} {'panel':>6} {'champion':>9} {'popularity':>11}")
    for run in args.from_run.split(","):
        settings = Settings.from_env(run)
        directory = world.world_dir(settings.data_dir)
        config = world.load_config(directory)
        served = sorted((directory / "oracle").glob("date=*"))
        version = model_store.champion_version(settings.models)
        if not served or version is None:
            print(f"{run:<60} no finished day with a champion")
            continue
        if config.profile != "default":
            print(f"{run[-60:]:<60} the {config.profile} profile has no cold-start slices")
            continue
        date = dt.date.fromisoformat(served[-1].name.removeprefix("date="))
        day = config.day_index(date)
        slices = oracle.cold_start(config, date, {"champion": model_policy(settings, version),
                                                  "popularity": popularity_policy()},
                                   # who was in the product that day: the state
                                   # after the day before, as the day was served
                                   world.user_state(directory, config, day - 1),
                                   world.past_plays(directory, config, day))
        for name, found in slices.items():
            panel = found.get("items", found.get("users"))
            values = found["policies"]
            print(f"{run[-60:]:<60} {name:<10} {panel:>6} "
                  f"{values['champion']['ndcg_at_10']:>9.4f} "
                  f"{values['popularity']['ndcg_at_10']:>11.4f}")
    return 0
