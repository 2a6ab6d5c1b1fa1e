"""``flywheel benchmark target``: which training target makes the better model?

On the training sets of a finished demo run (its data directory), each day's model is
trained three ways, on the same rows, and each is measured by the world's oracle
(NDCG@10 on the day's fixed panel, against the hidden truth):

- **clipped**: target = grade × min(1/θ, 10), unweighted squared loss (the product's
  target up to the build that adopted ``ratio``);
- **ratio**: target = grade / θ with ``sample_weight`` = θ (the product's target): the weighted least-squares
  fit of a leaf is Σ grade / Σ θ, the observed grades over their expected examination,
  unbiased for the grade once examined without any clip, and a row of a rarely examined
  position weighs as little as it tells;
- **raw**: target = grade, unweighted (no de-biasing), for reference.

θ is the day's own examination curve (`curated.position_bias`), within
[`training_set.MIN_EXAMINATION`, 1] as the product takes it. Prints, per
day and on average, each target's NDCG@10 and the paired differences with ``clipped``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

import numpy as np

from flywheel_assets.settings import Settings
from flywheel_assets.train import model as model_lib
from flywheel_assets.train.training_set import MIN_EXAMINATION

TARGETS = ("clipped", "ratio", "raw")
# The clip of the earlier target.
CLIP = 10.0


def labelled(rows, target: str, clip: float):
    """The rows with the ``target`` label and weight of one of TARGETS."""
    theta = np.clip(rows["examination"].fillna(1.0).to_numpy(dtype="float64"),
                    MIN_EXAMINATION, 1.0)
    grade = rows["label_grade"].to_numpy(dtype="float64")
    if target == "clipped":
        return rows.assign(_y=grade * np.minimum(1.0 / theta, clip), _w=1.0)
    if target == "ratio":
        return rows.assign(_y=grade / theta, _w=theta)
    if target == "raw":
        return rows.assign(_y=grade, _w=1.0)
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


def main(args: argparse.Namespace) -> int:
    from flywheel_assets.serve.serving import RankingPolicy
    from flywheel_assets.simulation.oracle import evaluate_policies
    from flywheel_assets.simulation.world import load_config, past_plays, world_dir
    from flywheel_assets.warehouse import connect

    settings = Settings.from_env(args.data_dir)
    directory = world_dir(settings.data_dir)
    if not (directory / "config.json").exists():
        raise SystemExit(f"flywheel benchmark target: no demo run in {settings.data_dir} "
                         "(run `flywheel demo --data-dir …` first)")
    config = load_config(directory)
    with connect(settings.warehouse, read_only=True) as conn:
        days = [str(d) for (d,) in conn.execute(
            "SELECT DISTINCT partition_date FROM ml.training_set ORDER BY 1").fetchall()]
    if args.days:
        days = days[::max(1, len(days) // args.days)][:args.days]
    results = []
    for day in days:
        with connect(settings.warehouse, read_only=True) as conn:
            rows = conn.execute("""
                SELECT t.*, pb.examination FROM ml.training_set t
                LEFT JOIN curated.position_bias pb
                       ON pb.partition_date = t.partition_date AND pb.position = t.position
                WHERE t.partition_date = ? AND t.split = 'train'
                ORDER BY t.impression_id  -- the same rows in the same order: reproducible
                """, [day]).df()
        if rows["examination"].isna().all():
            continue
        policies = {}
        for target in TARGETS:
            pipe = model_lib.train(labelled(rows, target, CLIP),
                                   label="_y", weight="_w")
            policies[target] = RankingPolicy(target, pipe)
        date = dt.date.fromisoformat(day)
        oracle = evaluate_policies(config, date, policies,
                                   past_plays=past_plays(directory, config,
                                                         config.day_index(date)))
        result = {"day": day, "train_rows": len(rows),
                  **{t: oracle[t]["ndcg_at_10"] for t in TARGETS}}
        results.append(result)
        print(f"{day}: " + "  ".join(f"{t} {result[t]:.4f}" for t in TARGETS), flush=True)
    if not results:
        raise SystemExit("flywheel benchmark target: no day with an identified examination curve")
    summary = {t: float(np.mean([r[t] for r in results])) for t in TARGETS}
    diffs = {t: [r[t] - r["clipped"] for r in results] for t in TARGETS if t != "clipped"}
    print(f"\nbenchmark target: {len(results)} days of {settings.data_dir}; oracle NDCG@10")
    for t in TARGETS:
        line = f"  {t:<8} mean {summary[t]:.4f}"
        if t in diffs:
            d = np.array(diffs[t])
            se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
            line += (f"   vs clipped {d.mean():+.4f} (se {se:.4f}; better on "
                     f"{int((d > 0).sum())} of {len(d)} days)")
        print(line)
    out = settings.data_dir / "benchmarks" / "target.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"days": results, "mean": summary}, indent=2))
    return 0
