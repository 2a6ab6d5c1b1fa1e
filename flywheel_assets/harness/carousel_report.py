"""What ``flywheel demo --profile carousel`` prints and records each day and at the end:
every policy's true value, the gate's decisions judged by the oracle, and how far the
off-policy estimates of a uniformly random policy, made from the Thompson-sampling
logs, were from the truth (with their effective sample size and trust verdict)."""

from __future__ import annotations

import json
import statistics

from flywheel_assets import warehouse
from flywheel_assets.settings import Settings

HEADER = (f"{'date':<10} {'impr':>6} {'clicks':>6} {'served by':<19} {'promoted':<8} "
          f"{'true: logging':>13} {'candidate':>9} {'vs':>6} {'champion':>8}  "
          f"{'uniform DR (truth, ESS, trusted)':<34}")


def day_record(settings: Settings, date: str, oracle: dict, run_ok: bool) -> dict:
    with warehouse.connect(settings.warehouse) as conn:
        counts = dict(conn.execute("SELECT stream, sum(rows_read) FROM raw.landing_files "
                                   "WHERE partition_date = ? GROUP BY stream", [date]).fetchall())
        quarantined = conn.execute("SELECT count(*) FROM raw.quarantined_events WHERE "
                                   "partition_date = ?", [date]).fetchone()[0]
        decision = conn.execute("SELECT promote, decision FROM ml.gate_decisions WHERE "
                                "partition_date = ?", [date]).fetchone()
    chosen = json.loads(decision[1]) if decision else {}
    versus = oracle.get("compared_with") or "incumbent"
    baseline = oracle.get("true_value_logging" if versus == "incumbent"
                          else "true_value_champion_evaluated")
    candidate = oracle.get("true_value_candidate_evaluated")
    uniform = oracle.get("estimate_uniform") or {}
    logging = oracle.get("estimate_logging") or {}
    return {
        "date": date, "impressions": int(counts.get("impressions", 0)),
        "clicks": int(counts.get("interactions", 0)), "quarantined": int(quarantined),
        "served_by": oracle["served_by"], "candidate_version": oracle.get("candidate_version"),
        "compared_with": versus, "promoted": bool(decision[0]) if decision else False,
        # The model the gate put in service: the day's candidate, or under gate.rule =
        # confirmed an earlier day's, confirmed on this day's logs.
        "promoted_version": ((chosen.get("version") or oracle.get("candidate_version"))
                             if decision and decision[0] else None),
        "decision": chosen.get("reasons", ["no decision"]),
        "champion_version": oracle["champion_version"],
        "true_value_logging": oracle.get("true_value_logging"),
        "true_value_candidate": candidate, "true_value_compared_with": baseline,
        # The model in service after the day (None while the logging policy serves).
        "true_value_champion": oracle.get("true_value_champion"),
        "truly_better": (candidate > baseline) if None not in (candidate, baseline) else None,
        "uniform_truth": oracle.get("true_value_uniform"),
        "uniform_snips": uniform.get("snips"), "uniform_dr": uniform.get("dr"),
        "uniform_rel_error_snips": uniform.get("rel_error_snips"),
        "uniform_rel_error_dr": uniform.get("rel_error_dr"),
        "uniform_ess": uniform.get("ess"), "uniform_trusted": uniform.get("trusted"),
        "uniform_untrusted_because": uniform.get("untrusted_because"),
        "logging_estimate": logging.get("dr"), "logging_rel_error": logging.get("rel_error_dr"),
        "candidate_estimate": oracle.get("estimate_candidate"),
        "rotation_succeeded": run_ok}


def _f(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def row(r: dict) -> str:
    uniform = (f"{_f(r['uniform_dr'])} ({_f(r['uniform_truth'])}, {_f(r['uniform_ess'], 0)}, "
               f"{'yes' if r['uniform_trusted'] else 'no'})" if r["uniform_dr"] is not None else "-")
    return (f"{r['date']:<10} {r['impressions']:>6} {r['clicks']:>6} {r['served_by'][:19]:<19} "
            f"{('yes' if r['promoted'] else 'no'):<8} {_f(r['true_value_logging']):>13} "
            f"{_f(r['true_value_candidate']):>9} {_f(r['true_value_compared_with']):>6} "
            f"{_f(r['true_value_champion']):>8}  {uniform:<34}")


def summary(records: list[dict]) -> tuple[dict, list[str]]:
    """Figures and printed lines: decisions against the oracle, uniform OPE errors."""
    promoted = [r for r in records if r["promoted"]]
    # Each promotion judged on the day its model was the candidate (a confirmed one
    # competed with the same champion on both days).
    by_candidate = {r["candidate_version"]: r for r in records}
    in_service = {r["promoted_version"] for r in promoted}
    better = [r for r in records if r["truly_better"]]
    held = [r for r in better if r["candidate_version"] not in in_service]
    figures = {"promotions": len(promoted),
               "promoted_truly_better": sum(bool(by_candidate.get(r["promoted_version"], {})
                                                 .get("truly_better")) for r in promoted),
               "truly_better_candidates": len(better), "truly_better_held": len(held),
               "held_because_untrustworthy": sum(any(d.startswith("untrustworthy")
                                                     for d in r["decision"]) for r in held)}
    lines = [f"  gate vs oracle: {figures['promotions']} promotions, "
             f"{figures['promoted_truly_better']} of them truly better than what they replaced; "
             f"{figures['truly_better_held']} of {figures['truly_better_candidates']} truly "
             f"better candidates held ({figures['held_because_untrustworthy']} on an "
             "untrustworthy estimate)"]
    for trusted in (True, False):
        days = [r for r in records if r["uniform_trusted"] is trusted
                and r["uniform_rel_error_dr"] is not None]
        if not days:
            continue
        errors = {e: [r[f"uniform_rel_error_{e}"] for r in days] for e in ("snips", "dr")}
        key = "uniform_trusted" if trusted else "uniform_untrusted"
        figures[key] = {
            "days": len(days), **{f"{e}_rel_error_median": statistics.median(v)
                                  for e, v in errors.items()},
            **{f"{e}_rel_error_max": max(v) for e, v in errors.items()},
            "ess_median": statistics.median(r["uniform_ess"] for r in days)}
        lines.append(
            f"  uniform-random policy valued from the logs, {len(days)} days "
            f"{'trusted' if trusted else 'flagged untrustworthy'}: relative error SNIPS "
            f"median {statistics.median(errors['snips']):.3f} max {max(errors['snips']):.3f}, "
            f"DR median {statistics.median(errors['dr']):.3f} max {max(errors['dr']):.3f}, "
            f"ESS median {figures[key]['ess_median']:.0f}")
    if records:
        first, last = records[0], records[-1]
        after = (f"model in service after day {len(records)} {_f(last['true_value_champion'])}"
                 if last["true_value_champion"] is not None else
                 f"the logging policy still serves (day {len(records)}: "
                 f"{_f(last['true_value_logging'])})")
        lines.append(f"  true clicks per request: logging policy on day 1 "
                     f"{_f(first['true_value_logging'])}; {after}")
    return figures, lines
