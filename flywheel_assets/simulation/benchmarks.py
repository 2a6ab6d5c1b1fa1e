"""``flywheel benchmark signal``: does a valid signal make a better wheel?

Runs the same world twice, in separate data directories, one after the other (so the
two do not share the machine's cores): the full loop (curation filters and
inverse-propensity weights) and the naive loop (``--no-ips --no-filters``). Prints the
last day's oracle NDCG@10 of both and the signal-validity figures of the full loop.
"""

from __future__ import annotations

import argparse
import json

from flywheel_assets.settings import Settings
from flywheel_assets.simulation.config import WorldConfig

FIGURES = ("oracle_ndcg_at_10", "bot_filter_precision", "bot_filter_recall",
           "position_bias_max_rel_error", "effective_sample_size")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("benchmark", help="benchmarks on the simulated world",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=["signal"], help="signal: full loop vs --no-ips --no-filters")
    p.add_argument("--days", type=int, default=14)
    p.add_argument("--seed", type=int, default=WorldConfig.seed)
    p.add_argument("--data-dir", help="runs go to <data dir>/benchmarks/<name>/{full,naive}")
    p.set_defaults(func=_main)


def _fmt(value) -> str:
    return "-" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))


def _main(args: argparse.Namespace) -> int:
    from flywheel_assets.simulation.demo import run_demo

    base = Settings.from_env(args.data_dir).data_dir / "benchmarks" / args.name
    results = {}
    for label, switches in (("full", {}), ("naive", {"use_ips": False, "use_filters": False})):
        settings = Settings.from_env(base / label, **switches)
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
