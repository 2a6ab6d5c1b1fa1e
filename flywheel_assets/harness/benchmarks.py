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
loop (``--epsilon 0 --no-rerank``): catalogue coverage and exposure Gini of the
champion's slates, and oracle NDCG@10, on day 1 and on the last day (default 21 days).
"""

from __future__ import annotations

import argparse
import json

from flywheel_assets.harness import gate_benchmark, target_benchmark
from flywheel_assets.settings import Settings
from flywheel_assets.simulation.config import WorldConfig

FIGURES = ("oracle_ndcg_at_10", "bot_filter_precision", "bot_filter_recall",
           "position_bias_max_rel_error", "effective_sample_size")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("benchmark", help="benchmarks on the simulated world",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=["signal", "loops", "gate", "target"],
                   help="signal: full loop vs --no-ips --no-filters; "
                        "loops: guarded loop vs --epsilon 0 --no-rerank; "
                        "gate: the gate's error rates against the truth; "
                        "target: training targets compared on a finished demo run")
    p.add_argument("--days", type=int, help="simulated days (default: 14 for signal, 21 for "
                                            "loops, 6 decision days per world for gate); "
                                            "target: how many of the run's days (default all)")
    p.add_argument("--seed", type=int, default=WorldConfig.seed)
    p.add_argument("--data-dir", help="runs go to <data dir>/benchmarks/<name>/{full,naive}")
    gate_benchmark.add_arguments(p)
    p.set_defaults(func=_main)


def _fmt(value) -> str:
    return "-" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def _main(args: argparse.Namespace) -> int:
    return {"loops": _loops, "signal": _signal, "gate": gate_benchmark.main,
            "target": target_benchmark.main}[args.name](args)


LOOP_FIGURES = ("catalog_coverage", "exposure_gini", "oracle_ndcg_at_10")


def _loops(args: argparse.Namespace) -> int:
    from flywheel_assets.harness.demo import run_demo

    days = args.days or 21
    base = Settings.from_env(args.data_dir).data_dir / "benchmarks" / "loops"
    results = {}
    for label, epsilon, rerank in (("guarded", WorldConfig.exploration_rate, True),
                                   ("greedy", 0.0, False)):
        settings = Settings.from_env(base / label, {} if rerank else {
            "serving.diversity": 0.0, "serving.popularity_balance": 0.0})
        config = WorldConfig(seed=args.seed, start_date=settings.start_date,
                             exploration_rate=epsilon,
                             rerank_diversity=settings.serving.diversity,
                             rerank_popularity_balance=settings.serving.popularity_balance)
        summary = run_demo(settings, config, days, progress=False)
        results[label] = {"first_day": summary["days"][0], "last_day": summary["days"][-1],
                          "promotions": summary["promotions"],
                          "wall_seconds": summary["wall_seconds"]}
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
    return 0


def _signal(args: argparse.Namespace) -> int:
    from flywheel_assets.harness.demo import run_demo

    args.days = args.days or 14
    base = Settings.from_env(args.data_dir).data_dir / "benchmarks" / args.name
    results = {}
    for label, switches in (("full", {}), ("naive", {"training.ips": False,
                                                             "curation.filters": False})):
        settings = Settings.from_env(base / label, switches)
        config = WorldConfig(seed=args.seed, start_date=settings.start_date)
        summary = run_demo(settings, config, args.days, progress=False)
        results[label] = {"last_day": summary["days"][-1], "wall_seconds": summary["wall_seconds"]}
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
