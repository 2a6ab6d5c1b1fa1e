"""The world as a feedback source: its config and hidden truth live in ``world_dir``
(``data/world/``), its output goes to the landing zone, like a real product's."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd

from flywheel_assets import warehouse
from flywheel_assets.serve.serving import RankingPolicy, popularity_policy
from flywheel_assets.settings import Settings
from flywheel_assets.simulation import carousel, signal_quality, truth
from flywheel_assets.simulation.config import Scenario, WorldConfig
from flywheel_assets.simulation.landing_writer import write_day
from flywheel_assets.simulation.oracle import evaluate_policies, off_policy_truth
from flywheel_assets.simulation.traffic import simulate_day
from flywheel_assets.train import model_store


def world_dir(data_dir: Path) -> Path:
    return data_dir / "world"


def save_config(directory: Path, config: WorldConfig) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config.to_dict(), indent=2))


def load_config(directory: Path) -> WorldConfig:
    """The world's config as saved by the run that created it (defaults if none)."""
    path = directory / "config.json"
    if not path.exists():
        return WorldConfig()
    raw = json.loads(path.read_text())
    raw["start_date"] = dt.date.fromisoformat(raw["start_date"])
    raw["scenarios"] = tuple(Scenario(**s) for s in raw["scenarios"])
    return WorldConfig(**raw)


def past_plays(directory: Path, config: WorldConfig, day: int) -> np.ndarray:
    """The decayed plays of the days the world served before ``day`` (from each day's
    truth); a day that was never served contributes none."""
    daily = {}
    for d in range(1, day):
        path = directory / "truth" / f"date={config.date_of(d).isoformat()}" / "items.parquet"
        if path.exists():
            daily[d] = pd.read_parquet(path, columns=["plays"])["plays"].to_numpy()
    return truth.decayed_plays(daily, config, day)


def _write_truth(directory: Path, config: WorldConfig, date: str, traffic) -> None:
    day = config.day_index(date)
    out = directory / "truth" / f"date={date}"
    out.mkdir(parents=True, exist_ok=True)
    pop = truth.population(config, day)
    cat = truth.catalogue(config, day)
    pd.DataFrame({"user_id": pop.users["user_id"], "is_bot": pop.is_bot,
                  "activity": pop.activity,
                  **{f"taste_{i}": pop.taste[:, i] for i in range(config.latent_dim)}}
                 ).to_parquet(out / "users.parquet", index=False)
    pd.DataFrame({"item_id": cat.items["item_id"], "quality": cat.quality,
                  "bot_target": np.isin(np.arange(len(cat.quality)), pop.bot_targets),
                  "popularity": traffic.items["popularity"], "plays": traffic.item_plays,
                  **{f"latent_{i}": cat.latent[:, i] for i in range(config.latent_dim)}}
                 ).to_parquet(out / "items.parquet", index=False)
    req = traffic.requests
    np.savez_compressed(out / "requests.npz", request_id=req["request_id"],
                        user_idx=req["user_idx"], pools=req["pools"].astype(np.int32),
                        seconds=req["seconds"], device=req["device"].astype(str),
                        is_bot=req["is_bot"])
    (out / "day.json").write_text(json.dumps({
        "date": date, "day": day,
        "examination_curve": truth.examination_curve(config).tolist(),
        "active_scenarios": [s.name for s in config.scenarios if s.active(day)],
        "policy_version": traffic.policy_version,
    }, indent=2))


def run_day(data_dir: Path, landing_dir: Path, config: WorldConfig, date: str,
            policy: RankingPolicy) -> dict:
    """Serve one day with ``policy``, land its files, record the truth behind them."""
    directory = world_dir(data_dir)
    save_config(directory, config)
    if config.profile == carousel.PROFILE:
        return carousel.simulate_day(directory, landing_dir, config, date, policy)
    traffic = simulate_day(config, dt.date.fromisoformat(date), policy,
                           past_plays(directory, config, config.day_index(date)))
    counts = write_day(landing_dir, date, traffic)
    _write_truth(directory, config, date, traffic)
    return {**counts, "policy_version": policy.version,
            "broken_rows": len(traffic.broken_impressions) + len(traffic.broken_interactions),
            "bots": len(traffic.bot_user_ids)}


def _off_policy_errors(settings: Settings, config: WorldConfig, date: str,
                       plays: np.ndarray) -> dict:
    """The product's off-policy estimates of the day's candidate against the candidate
    policy's true value on the same requests (relative errors)."""
    path = world_dir(settings.data_dir) / "truth" / f"date={date}" / "requests.npz"
    with warehouse.connect(settings.warehouse_path) as conn:
        row = conn.execute("SELECT metrics FROM ml.model_evaluations WHERE partition_date = ?",
                           [date]).fetchone()
        trained_on = {r[0] for r in conn.execute(
            "SELECT DISTINCT request_id FROM ml.training_set WHERE partition_date = ? "
            "AND split = 'train'", [date]).fetchall()}
    record = json.loads(row[0]) if row else {}
    ope = (record.get("off_policy") or {}).get("policies", {}).get("candidate")
    if ope is None or not path.exists():
        return {}
    with np.load(path) as npz:
        requests = {name: npz[name] for name in npz.files}
    candidate = RankingPolicy(record["candidate_version"], model_store.load_model(
        settings.models_dir, record["candidate_version"]))
    true = off_policy_truth(config, dt.date.fromisoformat(date), candidate, requests,
                            exclude=trained_on, past_plays=plays)
    out = {"ope_true_value": true["value"], "ope_truth_requests": true["requests"],
           "ope_requests": ope["requests"], "ope_effective_sample_size": ope["effective_sample_size"]}
    for name in ("ips", "snips", "dr"):
        out[f"ope_{name}"] = ope[name]["value"]
        out[f"ope_rel_error_{name}"] = abs(ope[name]["value"] - true["value"]) / true["value"]
        out[f"ope_{name}_ci_covers_truth"] = ope[name]["ci_low"] <= true["value"] <= ope[name]["ci_high"]
    return out


def oracle_day(settings: Settings, config: WorldConfig, date: str,
               champion: RankingPolicy) -> dict:
    """The champion and the popularity baseline against the hidden truth, and the
    validity of the day's training signal; saved to ``world/oracle/date=…/oracle.json``."""
    data_dir = settings.data_dir
    if config.profile == carousel.PROFILE:
        record = carousel.oracle_day(world_dir(data_dir), settings, config, date, champion)
        _save_oracle(data_dir, date, record)
        return record
    # The catalogue as the day was served: popularity with the plays of the days before.
    plays = past_plays(world_dir(data_dir), config, config.day_index(date))
    result = evaluate_policies(config, dt.date.fromisoformat(date),
                               {"champion": champion, "popularity": popularity_policy()},
                               past_plays=plays)
    record = {"date": date, **signal_quality.measure(settings, config, date),
              "champion_version": champion.version,
              "oracle_ndcg_at_10": result["champion"]["ndcg_at_10"],
              "oracle_regret_at_10": result["champion"]["regret_at_10"],
              "exposure_gini": result["champion"]["exposure_gini"],
              "catalog_coverage": result["champion"]["catalog_coverage"],
              "popularity_oracle_ndcg_at_10": result["popularity"]["ndcg_at_10"]}
    record.update(_off_policy_errors(settings, config, date, plays))
    _save_oracle(data_dir, date, record)
    return record


def _save_oracle(data_dir: Path, date: str, record: dict) -> None:
    out = world_dir(data_dir) / "oracle" / f"date={date}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "oracle.json").write_text(json.dumps(record, indent=2, default=str))
