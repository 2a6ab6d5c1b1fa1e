"""The world as a feedback source: its config and hidden truth live in ``world_dir``
(``data/world/``), its output goes to the landing zone, like a real product's."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd

from flywheel_assets import warehouse
from flywheel_assets.serve.serving import RankingPolicy, model_policy, popularity_policy
from flywheel_assets.settings import Settings
from flywheel_assets.simulation import carousel, engagement, signal_quality, truth
from flywheel_assets.simulation.config import Scenario, WorldConfig
from flywheel_assets.simulation.landing_writer import write_day
from flywheel_assets.simulation.oracle import cold_start, evaluate_policies, off_policy_truth
from flywheel_assets.simulation.traffic import simulate_day


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
        path = truth_dir(directory, config, d) / "items.parquet"
        if path.exists():
            daily[d] = pd.read_parquet(path, columns=["plays"])["plays"].to_numpy()
    return truth.decayed_plays(daily, config, day)


def truth_dir(directory: Path, config: WorldConfig, day: int) -> Path:
    return directory / "truth" / f"date={config.date_of(day).isoformat()}"


def user_state(directory: Path, config: WorldConfig, day: int):
    """Who is in the product after ``day`` and how satisfied (responsive world); None
    on day 0, in a fixed world, or when that day was never served."""
    if not config.responsive or day < 1:
        return None
    return engagement.load(truth_dir(directory, config, day))


def _write_truth(directory: Path, config: WorldConfig, date: str, traffic, state=None,
                 audience: dict | None = None) -> None:
    day = config.day_index(date)
    out = truth_dir(directory, config, day)
    out.mkdir(parents=True, exist_ok=True)
    pop = truth.population(config, day, state)
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
    (np.savez if config.fast else np.savez_compressed)(out / "requests.npz", request_id=req["request_id"],
                        user_idx=req["user_idx"], pools=req["pools"].astype(np.int32),
                        seconds=req["seconds"], device=req["device"].astype(str),
                        is_bot=req["is_bot"], columns=req["columns"].astype(np.int16))
    (out / "day.json").write_text(json.dumps({
        "date": date, "day": day,
        "examination_curve": truth.examination_curve(config).tolist(),
        "active_scenarios": [s.name for s in config.scenarios if s.active(day)],
        "policy_version": traffic.policy_version,
        "audience": audience or {},
    }, indent=2))


def run_day(data_dir: Path, landing_dir: Path, config: WorldConfig, date: str,
            policy: RankingPolicy) -> dict:
    """Serve one day with ``policy``, land its files, record the truth behind them."""
    directory = world_dir(data_dir)
    save_config(directory, config)
    if config.profile == carousel.PROFILE:
        return carousel.simulate_day(directory, landing_dir, config, date, policy)
    day = config.day_index(date)
    state = user_state(directory, config, day - 1)
    traffic = simulate_day(config, dt.date.fromisoformat(date), policy,
                           past_plays(directory, config, day), state)
    counts = write_day(landing_dir, date, traffic, fast=config.fast)
    audience = None
    if config.responsive:
        req = traffic.requests
        shown = np.take_along_axis(req["pools"], req["columns"], axis=1)
        after, audience = engagement.next_state(config, state, day, req["user_idx"],
                                                req["is_bot"], shown, req["gain"],
                                                req["monotony"], len(traffic.items))
        engagement.save(truth_dir(directory, config, day), after)
    _write_truth(directory, config, date, traffic, state, audience)
    return {**counts, "policy_version": policy.version,
            "broken_rows": len(traffic.broken_impressions) + len(traffic.broken_interactions),
            "bots": len(traffic.bot_user_ids)}


def _off_policy_errors(settings: Settings, config: WorldConfig, date: str,
                       plays: np.ndarray) -> dict:
    """The product's off-policy estimates of the day's candidate against the candidate
    policy's true value on the same requests (relative errors), and the gate's decision
    against the truth: for the day's candidate and the one awaiting confirmation, the
    estimated difference with the champion (or the incumbent) and its interval beside
    the true difference of the same two rankings on the same requests."""
    path = world_dir(settings.data_dir) / "truth" / f"date={date}" / "requests.npz"
    with warehouse.connect(settings.warehouse) as conn:
        row = conn.execute("SELECT metrics FROM ml.model_evaluations WHERE partition_date = ?",
                           [date]).fetchone()
        trained_on = {r[0] for r in conn.execute(
            "SELECT DISTINCT request_id FROM ml.training_set WHERE partition_date = ? "
            "AND split = 'train'", [date]).fetchall()}
        gate = conn.execute("SELECT decision FROM ml.gate_decisions WHERE partition_date = ?",
                            [date]).fetchone()
    record = json.loads(row[0]) if row else {}
    ope = (record.get("off_policy") or {}).get("policies", {}).get("candidate")
    if ope is None or not path.exists():
        return {}
    with np.load(path) as npz:
        requests = {name: npz[name] for name in npz.files}
    day, k = dt.date.fromisoformat(date), int(record.get("k") or 10)

    def true_value(version: str | None) -> dict:
        policy = None if version is None else model_policy(settings, version)
        return off_policy_truth(config, day, policy, requests, k=k, exclude=trained_on,
                                past_plays=plays)

    true = true_value(record["candidate_version"])
    out = {"ope_true_value": true["value"], "ope_truth_requests": true["requests"],
           "ope_requests": ope["requests"], "ope_effective_sample_size": ope["effective_sample_size"]}
    for name in ("ips", "snips", "dr"):
        out[f"ope_{name}"] = ope[name]["value"]
        out[f"ope_rel_error_{name}"] = abs(ope[name]["value"] - true["value"]) / true["value"]
        out[f"ope_{name}_ci_covers_truth"] = ope[name]["ci_low"] <= true["value"] <= ope[name]["ci_high"]
    if gate is not None and "columns" in requests:
        out["gate_decision"] = _decision_truth(settings, record, json.loads(gate[0]),
                                               true, true_value)
    return out


def _decision_truth(settings: Settings, record: dict, decision: dict, candidate_truth: dict,
                    true_value) -> dict:
    """The day's gate decision beside the truth of each difference it tested."""
    from flywheel_assets.evaluate import promotion

    baseline = true_value(record.get("champion_version"))["value"]
    tests = []
    for contender in ("candidate", "pending"):
        version = record.get(f"{contender}_version")
        evidence = promotion.primary_evidence(record, settings.gate, contender) if version else None
        if evidence is None:
            continue
        value = (candidate_truth if contender == "candidate" else true_value(version))["value"]
        tests.append({"contender": contender, "version": version, "versus": evidence["versus"],
                      "metric": evidence["metric"], "estimated_difference": evidence["delta"],
                      "ci_low": evidence["ci_low"], "ci_high": evidence["ci_high"],
                      "true_difference": value - baseline, "true_baseline": baseline,
                      "untrusted": bool(evidence["untrusted"])})
    figures = decision.get("figures", {})
    outcome = ("promoted" if decision.get("promote") else "awaiting confirmation"
               if figures.get("awaiting_confirmation") else "held")
    return {"outcome": outcome,
            "promoted_version": ((decision.get("version") or record["candidate_version"])
                                 if decision.get("promote") else None),
            "reason": (decision.get("reasons") or [""])[0], "tests": tests}


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
              "popularity_oracle_ndcg_at_10": result["popularity"]["ndcg_at_10"],
              **_audience(world_dir(data_dir), date)}
    # The cold-start slices: fresh items, users who joined in the last two weeks.
    slices = cold_start(config, dt.date.fromisoformat(date), {"champion": champion},
                        user_state(world_dir(data_dir), config, config.day_index(date) - 1),
                        plays)
    for name, found in slices.items():
        record[f"{name}_oracle_ndcg_at_10"] = found["policies"]["champion"]["ndcg_at_10"]
        record[f"{name}_oracle_panel"] = found.get("items", found.get("users"))
    record.update(_off_policy_errors(settings, config, date, plays))
    _save_oracle(data_dir, date, record)
    return record


def _audience(directory: Path, date: str) -> dict:
    """The day's audience in a responsive world (active users, requests, engagement per
    request, churn, arrivals), from the day's truth."""
    path = directory / "truth" / f"date={date}" / "day.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text()).get("audience") or {}


def _save_oracle(data_dir: Path, date: str, record: dict) -> None:
    out = world_dir(data_dir) / "oracle" / f"date={date}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "oracle.json").write_text(json.dumps(record, indent=2, default=str))
