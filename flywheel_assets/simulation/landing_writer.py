"""Write a simulated day in the landing contract: one folder per stream and day,
files written under a temporary name and renamed, ``_SUCCESS`` last."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import pandas as pd

from flywheel_assets.ingest.load import SUCCESS_MARKER
from flywheel_assets.simulation.traffic import DayTraffic


def day_dir(landing_dir: Path, stream: str, date: str) -> Path:
    folder = landing_dir / stream / f"date={date}"
    # A re-run replaces the day whole: no file of an earlier attempt survives.
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def publish(tmp: Path) -> None:
    os.replace(tmp, tmp.with_name(tmp.name.removeprefix(".tmp-")))


def _jsonl_gz(records, path: Path) -> None:
    tmp = path.with_name(".tmp-" + path.name)
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        for record in records:
            fh.write(record["__raw__"] if "__raw__" in record else json.dumps(record, default=str))
            fh.write("\n")
    publish(tmp)


def _jsonl_gz_duckdb(frame: pd.DataFrame, path: Path) -> None:
    """The same JSON Lines written by DuckDB (the fast path: no Python per row)."""
    import duckdb

    tmp = path.with_name(".tmp-" + path.name)
    with duckdb.connect() as conn:
        conn.register("_frame", frame)
        columns = ", ".join(f"CASE WHEN isnan({c}) THEN NULL ELSE {c} END AS {c}"
                            if pd.api.types.is_float_dtype(frame[c]) else c for c in frame.columns)
        target = str(tmp).replace("'", "''")
        conn.execute(f"COPY (SELECT {columns} FROM _frame) TO '{target}' "
                     "(FORMAT JSON, COMPRESSION GZIP)")
    publish(tmp)


def write_day(landing_dir: Path, date: str, traffic: DayTraffic, fast: bool = False) -> dict[str, int]:
    """Land one day: impressions and candidate pools (Parquet), interactions (JSON Lines, gzip), users and
    items snapshots and erasure requests (CSV), plus the broken client's JSON Lines when
    it is switched on. ``fast``: DuckDB writes the JSON Lines."""
    counts = {}
    imp_dir = day_dir(landing_dir, "impressions", date)
    imp = traffic.impressions.copy()
    imp["ts"] = pd.to_datetime(imp["ts"], utc=True)
    tmp = imp_dir / ".tmp-part-0000.parquet"
    imp.to_parquet(tmp, index=False)
    publish(tmp)
    counts["impressions"] = len(imp) + len(traffic.broken_impressions)

    streams = ["impressions", "interactions"]
    if traffic.candidates is not None:
        cand_dir = day_dir(landing_dir, "candidates", date)
        tmp = cand_dir / ".tmp-part-0000.parquet"
        traffic.candidates.to_parquet(tmp, index=False)
        publish(tmp)
        counts["candidates"] = len(traffic.candidates)
        streams.append("candidates")

    int_dir = day_dir(landing_dir, "interactions", date)
    inter = traffic.interactions.copy()
    inter["ts"] = pd.to_datetime(inter["ts"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if fast:
        _jsonl_gz_duckdb(inter, int_dir / "part-0000.jsonl.gz")
    else:
        records = inter.astype(object).where(inter.notna(), None).to_dict("records")
        _jsonl_gz(records, int_dir / "part-0000.jsonl.gz")
    counts["interactions"] = len(inter) + len(traffic.broken_interactions)

    if traffic.broken_impressions:
        _jsonl_gz(traffic.broken_impressions, imp_dir / "part-broken-client.jsonl.gz")
    if traffic.broken_interactions:
        _jsonl_gz(traffic.broken_interactions, int_dir / "part-broken-client.jsonl.gz")

    snapshots = [("users", traffic.users), ("items", traffic.items)]
    if traffic.deletions is not None:
        snapshots.append(("deletions", traffic.deletions))
    for stream, frame in snapshots:
        folder = day_dir(landing_dir, stream, date)
        out = frame.copy()
        for c in out.columns:
            if pd.api.types.is_datetime64_any_dtype(out[c]):
                out[c] = out[c].dt.strftime("%Y-%m-%d")
        tmp = folder / f".tmp-{stream}.csv"
        out.to_csv(tmp, index=False)
        publish(tmp)
        counts[stream] = len(out)

    for stream in (*streams, *(name for name, _ in snapshots)):
        (landing_dir / stream / f"date={date}" / SUCCESS_MARKER).touch()
    return counts
