"""``flywheel example-logs``: landing days of a small product in the required columns
only, to try the flywheel on logs it has never seen (README, "Bring your own logs").

A 3-slot carousel over 40 items, anonymous requests, clicks only: impressions as CSV
(`impression_id, request_id, ts, item_id, position, propensity`) and clicks as JSON
Lines (`event_id, impression_id, ts, signal`). The logging policy shows a uniformly
random ordered 3 of the 40 items, so every impression's propensity is 1/40; people look
at position k less than at position 1 and click items at their own rates.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
from pathlib import Path

import numpy as np

N_ITEMS, SLOTS = 40, 3
EXAMINATION = np.array([1.0, 0.7, 0.5])


def write_minimal_day(landing: Path, day: str, seed: int, requests: int = 1500) -> dict:
    """One day in the required columns; returns how many impressions and clicks."""
    from flywheel_assets.ingest.load import SUCCESS_MARKER

    rng = np.random.default_rng(seed)
    ctr = np.random.default_rng(0).uniform(0.02, 0.4, N_ITEMS)
    imp_dir, int_dir = (landing / s / f"date={day}" for s in ("impressions", "interactions"))
    imp_dir.mkdir(parents=True, exist_ok=True)
    int_dir.mkdir(parents=True, exist_ok=True)
    clicks = 0
    with open(imp_dir / "impressions.csv", "w", newline="") as fi, \
            open(int_dir / "events.jsonl", "w") as fe:
        w = csv.writer(fi)
        w.writerow(["impression_id", "request_id", "ts", "item_id", "position", "propensity"])
        for r in range(requests):
            second = r * 86_000 // requests
            ts = f"{day}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"
            for k, item in enumerate(rng.permutation(N_ITEMS)[:SLOTS], start=1):
                impression = f"{day}-{r}-{k}"
                w.writerow([impression, f"{day}-{r}", ts, f"sku-{item}", k, 1 / N_ITEMS])
                if rng.random() < EXAMINATION[k - 1] * ctr[item]:
                    clicks += 1
                    fe.write(json.dumps({"event_id": f"e-{impression}", "impression_id": impression,
                                         "ts": ts, "signal": "click"}) + "\n")
    for folder in (imp_dir, int_dir):
        (folder / SUCCESS_MARKER).touch()
    return {"impressions": requests * SLOTS, "clicks": clicks}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("example-logs", help="write landing days in the required columns "
                                                   "only (a small carousel)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--days", type=int, default=2)
    p.add_argument("--first-day", help="default: FLYWHEEL_START_DATE (2026-01-01)")
    p.add_argument("--requests-per-day", type=int, default=1500)
    p.add_argument("--data-dir")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from flywheel_assets import storage
    from flywheel_assets.settings import Settings

    settings = Settings.from_env(args.data_dir)
    first = dt.date.fromisoformat(args.first_day) if args.first_day else settings.start_date
    for i in range(args.days):
        day = (first + dt.timedelta(days=i)).isoformat()
        counts = write_minimal_day(settings.landing_dir, day, seed=i,
                                   requests=args.requests_per_day)
        storage.publish_landing_day(settings.landing, day)  # when the landing zone is a bucket
        print(f"{day}: {counts['impressions']} impressions, {counts['clicks']} clicks -> "
              f"{settings.landing}/{{impressions,interactions}}/date={day}/")
    return 0
