"""``flywheel benchmark labels --noise P``: how many human labels does active selection
save? Labels needed to reach a target gold-set accuracy, choosing examples actively
(the queue's strategy, `label/selection.py`) or at random, with annotators who err
with probability P.

The examples are real product rows: the last day's training set of a finished run
(``--from-run``; default: a fresh 5-day demo of the default world, under
`<data dir>/benchmarks/labels/run`), with the features the product serves (profiles
included) and the world's noise-free grade of each pair as the truth. A gold set of
``--gold`` examples is drawn at random and labelled without noise; the rest is the
pool. Both arms start from the same ``--start`` random labels and add ``--batch`` at a
time up to ``--max-labels``; after each batch the human-label model
(`selection.label_model`, relevant = grade >= `labeling.relevant_grade`) is fitted on
the labels so far and scored on gold. The target (default): one point below the
accuracy of the same model fitted on the whole pool with clean labels. Labels needed =
the first count whose accuracy reaches the target, per repeat (``--repeats`` pool and
label draws); the medians are printed, then ``ratio=<random/active>`` last. A repeat
that never reaches the target counts as ``--max-labels`` (the ratio is then a bound, and
says so).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from flywheel_assets.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--noise", type=float, default=0.01,
                   help="labels: the annotators' error rate (default 0.01)")
    p.add_argument("--strategy", default="uncertainty",
                   choices=["uncertainty", "committee", "model_change"],
                   help="labels: the active strategy (default uncertainty)")
    p.add_argument("--repeats", type=int, default=5, help="labels: repeats (default 5)")
    p.add_argument("--max-labels", type=int, default=2000,
                   help="labels: the largest label budget tried (default 2000)")
    p.add_argument("--batch", type=int, default=10, help="labels: labels per round (default 10)")
    p.add_argument("--start", type=int, default=20,
                   help="labels: random labels both arms start from (default 20)")
    p.add_argument("--gold", type=int, default=3000, help="labels: gold examples (default 3000)")
    p.add_argument("--pool", type=int, default=30000, help="labels: pool size (default 30000)")
    p.add_argument("--target", type=float,
                   help="labels: the gold accuracy to reach (default: one point below the "
                        "model trained on the whole pool with clean labels)")


def examples(run_dir: Path) -> tuple[pd.DataFrame, np.ndarray, Settings]:
    """The last day's training-set rows of a finished run, with profiles, and each row's
    noise-free grade from the world's truth."""
    from flywheel_assets import warehouse
    from flywheel_assets.simulation import annotators, world
    from flywheel_assets.train import features as feats

    settings = Settings.from_env(run_dir)
    directory = world.world_dir(settings.data_dir)
    config = world.load_config(directory)
    with warehouse.connect(settings.warehouse) as conn:
        day = conn.execute("SELECT max(partition_date) FROM ml.training_set").fetchone()[0]
        if day is None:
            raise SystemExit(f"flywheel benchmark labels: {run_dir} has no training set")
        rows = conn.execute("SELECT * FROM ml.training_set WHERE partition_date = ? "
                            "ORDER BY impression_id", [day]).df()
        if settings.profiles.enabled:
            rows = feats.attach_profiles(conn, rows)
    grades = np.full(len(rows), -1)
    for source, group in rows.groupby("source_date"):
        folder = world.truth_dir(directory, config, config.day_index(pd.Timestamp(source).date()))
        grades[group.index.to_numpy()] = annotators.true_grades(
            folder, config, group["request_id"], group["item_id"])
    known = grades >= 0
    return rows[known].reset_index(drop=True), grades[known], settings


def _accuracy(model, X, y) -> float:
    return float((model.predict(X) == y).mean())


def labels_needed(X: np.ndarray, truth: np.ndarray, gold_X: np.ndarray, gold_y: np.ndarray,
                  noise: float, strategy: str, target: float, start: int, batch: int,
                  max_labels: int, seed: int) -> dict[str, tuple[int, bool]]:
    """Per arm: labels used when gold accuracy first reached ``target`` (and whether it
    did), from the same start."""
    from flywheel_assets.label import selection
    from flywheel_assets.simulation import annotators

    rng = np.random.default_rng(seed)
    given = annotators.noisy(truth, noise, np.random.default_rng([seed, 1]))
    first = rng.choice(len(X), start, replace=False)
    out = {}
    for arm in ("active", "random"):
        arm_rng = np.random.default_rng([seed, 2])
        y = np.full(len(X), np.nan)
        grades = np.full(len(X), np.nan)
        y[first], grades[first] = selection.relevant(given[first], 2), given[first]
        reached = False
        while True:
            known = ~np.isnan(y)
            if selection.can_learn(y, 2):
                model = selection.label_model(seed).fit(X[known], y[known])
                if _accuracy(model, gold_X, gold_y) >= target:
                    reached = True
                    break
            if known.sum() >= max_labels:
                break
            free = np.flatnonzero(~known)
            n = min(batch, max_labels - int(known.sum()))
            if arm == "random" or not selection.can_learn(y, 2):
                chosen = arm_rng.choice(free, n, replace=False)
            else:
                chosen = selection.query(strategy, X, y, grades, free, n, seed)
            y[chosen], grades[chosen] = selection.relevant(given[chosen], 2), given[chosen]
        out[arm] = (int((~np.isnan(y)).sum()), reached)
    return out


def main(args: argparse.Namespace) -> int:
    from flywheel_assets.label import selection

    base = Settings.from_env(args.data_dir).data_dir / "benchmarks" / "labels"
    run_dir = Path(args.from_run) if args.from_run else base / "run"
    if not args.from_run:
        from flywheel_assets.harness.benchmarks import _arm
        from flywheel_assets.simulation.config import WorldConfig

        print(f"a 5-day demo of the default world in {run_dir} (its log: demo.log there)")
        _arm(str(run_dir), {}, WorldConfig(seed=args.seed), args.days or 5, True)
    rows, truth, settings = examples(run_dir)
    relevant_grade = settings.labeling.relevant_grade
    X_all, _ = selection.feature_space(rows, extra_features=settings.training.extra_features)
    print(f"examples: {len(rows)} rows of the last training set of {run_dir}; "
          f"relevant (grade >= {relevant_grade}) {np.mean(truth >= relevant_grade):.3f}; "
          f"annotator noise {args.noise}; strategy {args.strategy}")
    results = []
    for repeat in range(args.repeats):
        rng = np.random.default_rng([args.seed, repeat])
        order = rng.permutation(len(rows))
        gold_idx = order[:args.gold]
        pool_idx = order[args.gold:args.gold + args.pool]
        gold_X, gold_y = X_all[gold_idx], selection.relevant(truth[gold_idx], relevant_grade)
        X, pool_truth = X_all[pool_idx], truth[pool_idx]
        ceiling_model = selection.label_model(repeat).fit(
            X, selection.relevant(pool_truth, relevant_grade))
        ceiling = _accuracy(ceiling_model, gold_X, gold_y)
        target = args.target if args.target is not None else ceiling - 0.01
        needed = labels_needed(X, pool_truth, gold_X, gold_y, args.noise, args.strategy,
                               target, args.start, args.batch, args.max_labels, repeat)
        results.append({"repeat": repeat, "ceiling": ceiling, "target": target,
                        "majority": float(max(gold_y.mean(), 1 - gold_y.mean())),
                        **{f"{arm}_labels": n for arm, (n, _) in needed.items()},
                        **{f"{arm}_reached": ok for arm, (_, ok) in needed.items()}})
        r = results[-1]
        print(f"  repeat {repeat}: whole-pool accuracy {ceiling:.4f} (majority class "
              f"{r['majority']:.4f}), target {target:.4f}: active {r['active_labels']}"
              f"{'' if r['active_reached'] else ' (not reached)'}, random {r['random_labels']}"
              f"{'' if r['random_reached'] else ' (not reached)'}")
    active = float(np.median([r["active_labels"] for r in results]))
    random = float(np.median([r["random_labels"] for r in results]))
    bound = not all(r["random_reached"] for r in results) or not all(r["active_reached"] for r in results)
    base.mkdir(parents=True, exist_ok=True)
    out = base / f"labels_noise_{args.noise}.json"
    out.write_text(json.dumps({"noise": args.noise, "strategy": args.strategy, "run": str(run_dir),
                               "results": results, "active_median": active,
                               "random_median": random}, indent=2))
    print(f"labels needed (median of {len(results)}): active {active:.0f}, random {random:.0f}"
          + (" (some repeats did not reach the target within --max-labels: a bound)" if bound else ""))
    print(f"record: {out}")
    print(f"ratio={random / active:.2f}")
    return 0
