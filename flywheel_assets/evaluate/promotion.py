"""The promotion rule, all of it, and the one way the champion changes
(docs/architecture.md, "The promotion rule").

Primary metric: the candidate's ranking valued off-policy on the day's logged requests
(doubly robust, in the value `evaluation.value` at K the product's slate size) minus
the champion's, or, before any model of ours has served, minus the incumbent's: the
policy that produced the logs, valued by the logs' own mean reward. The lower end of
the paired bootstrap interval must clear the minimum effect. An estimate the trust
guard marks untrustworthy (effective sample size, largest weight, support) is not
decided on: the champion holds, with that reason. When the product's logs cannot value
rankings at all (no pools and a catalogue too large to rank), the primary metric falls
back to examined-only NDCG@K on the holdout, with the same kind of interval; a holdout
whose requests carry no ranking information (one examined item each, or all of equal
grade, as on click-only feedback) says "no information" and holds.

Guards, each within its tolerance: catalogue coverage and exposure Gini of the slates
(a flywheel that feeds on its own exposure drifts toward a few popular items; a level
inside the healthy bounds passes whatever the champion's), and
NDCG@K on every slice with enough requests (new items, new users, devices).

Around the evidence, the rules of a day's decision (:func:`decide_for_day`): every
blocking data check passed; a candidate trained for an earlier day than the champion in service is never promoted
(a stale comparison); a re-run of the day whose candidate is already in service keeps
it (the gate never demotes); a candidate compared with another champion than the one
in service is not promoted until it is evaluated again. `promotion_gate` records the
decision in `ml.gate_decisions` (and its result in `monitor.check_results`, in the same
transaction); `champion_model` applies it (:func:`apply_decision`), after checking that
nothing it rests on changed since. The gate, ``flywheel promote``
and ``flywheel rollback`` all change the champion through :func:`change_champion`:
one audit row shape in `ml.promotions`, one pointer and history in the model store.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import duckdb

from flywheel_assets import warehouse
from flywheel_assets.ingest.contract import BLOCKING_CHECKS as INGEST_CHECKS
from flywheel_assets.settings import GateSettings, Settings
from flywheel_assets.train import model_store

# The promotion rule's thresholds are the `gate` group of the settings.
GatePolicy = GateSettings
# Blocking data checks the decision rests on, and the gate itself.
DATA_CHECKS = [*INGEST_CHECKS, ("training_set", "training_set_is_usable"),
               ("training_set", "training_set_has_no_gold")]
GATE = ("model_evaluation", "promotion_gate")
RERUN = "the candidate is already the champion in service (a re-run); the gate does not demote"


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    # Every figure the decision rests on: primary evidence, guards, policy.
    figures: dict = field(default_factory=dict)
    # The model put in service when ``promote`` (None: the day's candidate; a candidate
    # confirmed on a later day's logs otherwise).
    version: str | None = None


INCUMBENT = "the incumbent (the policy that produced the logs)"


def primary_evidence(record: dict, policy: GatePolicy, contender: str = "candidate") -> dict | None:
    """``contender`` (the day's candidate, or the one awaiting confirmation) − the policy
    it must beat (the champion, else the incumbent) on the primary metric, with its
    interval, its source, and ``untrusted`` / ``no_information`` when the gate must not
    decide on it."""
    ope = record.get("off_policy")
    k = record.get("k", 10)
    versus_champion = record.get("champion_version") is not None
    if ope:
        pol = ope["policies"]
        if versus_champion:
            base = "champion"
            diff = (ope.get("differences") or {}).get(contender) or (
                ope.get("difference") if contender == "candidate" else None)
        else:
            base = "logging"
            diff = (ope.get("differences_versus_logging") or {}).get(contender) or (
                ope.get("versus_logging") if contender == "candidate" else None)
        if diff is None or base not in pol or contender not in pol:
            return None  # an evaluation recorded by an older version: evaluate again
        unit = "DCG" if ope.get("value", "dcg") == "dcg" else "reward per request"
        untrusted = [f"{name}: {why}" for name in (contender, base)
                     for why in pol[name].get("untrusted_because", [])]
        return {"metric": f"off-policy {unit}@{k} (doubly robust, {ope.get('family', 'exposure')})",
                "versus": "champion" if versus_champion else INCUMBENT,
                "candidate": pol[contender]["dr"]["value"], "champion": pol[base]["dr"]["value"],
                "untrusted": untrusted, **diff["dr"]}
    holdout = (record.get("holdout_differences") or {}).get(contender) or (
        record.get("holdout_difference") if contender == "candidate" else None)
    if holdout:
        why = record.get("off_policy_unavailable") or "no off-policy evaluation"
        base = holdout.get("versus", "champion")
        out = {"metric": f"holdout NDCG@{k}, examined impressions (off-policy unavailable: {why})",
               "versus": "champion" if base == "champion" else INCUMBENT,
               "candidate": record["holdout"][contender]["ndcg_at_k"],
               "champion": record["holdout"][base]["ndcg_at_k"], "untrusted": [], **holdout}
        informative = holdout.get("requests") or 0
        if informative < policy.min_informative_requests:
            out["no_information"] = (
                f"{informative} holdout requests have two examined items of different grades "
                f"(need {policy.min_informative_requests}; on click-only feedback every "
                "interaction is a click): the holdout cannot rank")
        return out
    return None


def guards(record: dict, policy: GatePolicy, contender: str = "candidate") -> list[dict]:
    """Each guard with both figures, its limit and whether it holds."""
    out = []
    ope = record.get("off_policy") or {}
    policies = ope.get("policies", {})
    # Against the champion, or before any, against what the logging policy showed.
    base = "champion" if "champion" in policies else "logging"
    if contender in policies and "exposure_gini" in policies.get(base, {}):
        cand, champ = policies[contender], policies[base]
        limit = min((1 - policy.coverage_tolerance) * champ["catalog_coverage"],
                    policy.healthy_coverage)
        out.append({"guard": "catalog_coverage", "candidate": cand["catalog_coverage"],
                    "champion": champ["catalog_coverage"], "limit": limit,
                    "ok": cand["catalog_coverage"] >= limit, "rule": ">="})
        limit = max(champ["exposure_gini"] + policy.concentration_tolerance,
                    policy.healthy_exposure_gini)
        out.append({"guard": "exposure_gini", "candidate": cand["exposure_gini"],
                    "champion": champ["exposure_gini"], "limit": limit,
                    "ok": cand["exposure_gini"] <= limit, "rule": "<="})
    for name, s in record.get("slices", {}).items():
        if "champion" not in s or contender not in s or s["requests"] < policy.min_slice_requests:
            continue
        paired = s.get(f"{contender}_vs_champion")
        if paired is not None:
            # Non-inferiority: the lower end of the paired difference's interval may not
            # fall below -tolerance.
            out.append({"guard": f"slice {name} ndcg_at_k", "candidate": s[contender],
                        "champion": s["champion"], "limit": -policy.slice_tolerance,
                        "difference_ci_low": paired["ci_low"], "requests": s["requests"],
                        "ok": bool(paired["ci_low"] >= -policy.slice_tolerance),
                        "rule": "difference's lower bound >="})
            continue
        limit = s["champion"] - policy.slice_tolerance
        out.append({"guard": f"slice {name} ndcg_at_k", "candidate": s[contender],
                    "champion": s["champion"], "limit": limit, "requests": s["requests"],
                    "ok": bool(s[contender] >= limit), "rule": ">="})
    gold = record.get("gold") or {}
    paired = gold.get(f"{contender}_vs_champion")
    if paired is not None and gold.get("judged", gold["examples"]) >= policy.min_gold_examples:
        out.append({"guard": "gold_set auc", "candidate": gold[contender],
                    "champion": gold["champion"], "limit": -policy.gold_tolerance,
                    "difference_ci_low": paired["ci_low"],
                    "examples": gold.get("judged", gold["examples"]),
                    "version": gold["version"],
                    "ok": bool(paired["ci_low"] >= -policy.gold_tolerance),
                    "rule": "difference's lower bound >="})
    return out


def minimum_effect(primary: dict, policy: GatePolicy) -> float:
    """The larger of the absolute minimum effect and the share of the champion's value."""
    return max(policy.min_effect, policy.min_effect_share * abs(primary["champion"]))


def decide(record: dict, blocking_problems: list[str] = (), policy: GatePolicy = GatePolicy(),
           older_than_champion: str | None = None, contender: str = "candidate") -> Decision:
    """One test of ``contender``: it passes only when every blocking check passed, it is
    not older than the champion in service, its primary metric, trusted and
    informative, beats the champion's (or the incumbent's) with an interval whose lower
    end clears the minimum effect, and every guard holds. Whether a pass promotes at
    once or awaits confirmation is the rule's (:func:`decide_for_day`)."""
    figures = {"policy": asdict(policy)}
    if blocking_problems:
        return Decision(False, ["blocking checks upstream did not pass: "
                                + "; ".join(blocking_problems)], figures)
    if older_than_champion:
        return Decision(False, [older_than_champion], figures)
    primary = primary_evidence(record, policy, contender)
    checks = guards(record, policy, contender)
    figures.update(primary=primary, guards=checks)
    if primary is None:
        return Decision(False, ["no evidence to compare the candidate with the champion "
                                "(or an evaluation of an older version: materialise "
                                "model_evaluation again)"], figures)
    if primary.get("no_information"):
        return Decision(False, [f"no information: {primary['metric']}: "
                                f"{primary['no_information']}; the champion holds"], figures)
    if primary["untrusted"]:
        return Decision(False, [f"untrustworthy estimate, not decided on: {primary['metric']}: "
                                + "; ".join(primary["untrusted"])
                                + "; the champion holds"], figures)
    reasons = []
    floor = minimum_effect(primary, policy)
    primary["minimum_effect"] = floor
    text = (f"{primary['metric']}: candidate {primary['candidate']:.4f} vs {primary['versus']} "
            f"{primary['champion']:.4f}, delta {primary['delta']:+.4f} "
            f"({policy.confidence:.0%} interval {primary['ci_low']:+.4f} .. "
            f"{primary['ci_high']:+.4f}; minimum effect {floor:+.4f})")
    better = primary["ci_low"] > floor
    reasons.append(("better with confidence: " if better else "not better with confidence: ")
                   + text)
    failed = [g for g in checks if not g["ok"]]
    for g in failed:
        bound = (f"; lower bound of the difference {g['difference_ci_low']:+.4f}"
                 if "difference_ci_low" in g else "")
        reasons.append(f"guard {g['guard']} regressed: candidate {g['candidate']:.4f} vs "
                       f"champion {g['champion']:.4f}{bound} (limit {g['rule']} {g['limit']:.4f})")
    if better and not failed:
        reasons.append(f"all {len(checks)} guards within tolerance")
    return Decision(better and not failed, reasons, figures)


@dataclass(frozen=True)
class DayFacts:
    """What a day's decision rests on, all read from recorded state."""

    record: dict                       # the day's evaluation (`ml.model_evaluations`)
    data_problems: list[str]           # blocking data checks that failed or never ran
    in_service: str | None             # the champion in service now
    in_service_trained_for: str | None  # the day it was trained for


def day_facts(conn: duckdb.DuckDBPyConnection, models: model_store.Models, record: dict) -> DayFacts:
    day = record["partition_date"]
    current = model_store.champion_version(models)
    trained_for = (model_store.load_card(models, current).get("partition_date", "")
                   if current and current != record["candidate_version"] else None)
    return DayFacts(record, warehouse.failed_or_missing_checks(conn, day, DATA_CHECKS),
                    current, trained_for)


def decide_for_day(facts: DayFacts, policy: GatePolicy = GatePolicy()) -> Decision:
    """The day's decision, by every rule: the evidence and guards (:func:`decide`), the
    blocking checks, a stale comparison, a re-run, a champion changed since the
    evaluation."""
    record, current = facts.record, facts.in_service
    day, candidate = record["partition_date"], record["candidate_version"]
    compared_with = record.get("champion_version")
    older = None
    if current and current != candidate and (facts.in_service_trained_for or "") > day:
        older = (f"the candidate was trained for {day}, before the champion in service "
                 f"({current}, trained for {facts.in_service_trained_for})")
    decision = decide(record, facts.data_problems, policy, older)
    if current == candidate and not facts.data_problems:
        return Decision(True, [RERUN, *decision.reasons], decision.figures)
    if current is not None and current == record.get("pending_version") \
            and not facts.data_problems:
        # A re-run of the day that confirmed the model now in service: it stays.
        return Decision(True, [RERUN, *decision.reasons], decision.figures, version=current)
    if policy.rule == "confirmed":
        decision = _confirmation(record, facts, policy, decision)
    if decision.promote and current != compared_with:
        return Decision(False, [
            f"the champion in service changed since the evaluation ({compared_with or 'none'} "
            f"→ {current}); materialise model_evaluation again"], decision.figures)
    return decision


AWAITS = "passed its first test; awaits confirmation on the next day's logs (gate.rule = confirmed)"


def _confirmation(record: dict, facts: DayFacts, policy: GatePolicy,
                  first: Decision) -> Decision:
    """The "confirmed" rule: a candidate that passed on its own day's logs (``first``)
    is promoted only once it passes again on a later day's logs; the one awaiting
    confirmation from an earlier day (``pending_version``) is tested on today's."""
    pending = record.get("pending_version")
    figures = dict(first.figures)
    reasons = []
    if pending:
        confirm = decide(record, facts.data_problems, policy, contender="pending")
        figures["confirmation"] = {"version": pending, "reasons": confirm.reasons,
                                   "primary": confirm.figures.get("primary"),
                                   "guards": confirm.figures.get("guards")}
        if confirm.promote:
            return Decision(True, [f"{pending} confirmed on the logs of "
                                   f"{record['partition_date']}: " + confirm.reasons[0],
                                   *confirm.reasons[1:],
                                   f"today's candidate {record['candidate_version']}: "
                                   + "; ".join(first.reasons)
                                   + " (compared with the champion being replaced: not kept)"],
                            figures, version=pending)
        reasons.append(f"{pending} not confirmed on the logs of {record['partition_date']}: "
                       + "; ".join(confirm.reasons))
    if first.promote:
        figures["awaiting_confirmation"] = True
        return Decision(False, [f"{AWAITS}: " + first.reasons[0], *first.reasons[1:], *reasons],
                        figures)
    return Decision(False, [*first.reasons, *reasons], figures)


def awaiting_confirmation(conn: duckdb.DuckDBPyConnection, day: str, candidate: str,
                          champion: str | None) -> str | None:
    """The candidate an earlier day's gate passed once and left awaiting confirmation,
    if it competed with the same ``champion`` (else the comparison is stale): the most
    recent decision before ``day`` only."""
    row = conn.execute("SELECT candidate_version, compared_with, decision FROM ml.gate_decisions "
                       "WHERE partition_date < ? ORDER BY partition_date DESC LIMIT 1",
                       [day]).fetchone()
    if row is None or row[0] == candidate or row[1] != champion:
        return None
    figures = json.loads(row[2]).get("figures", {})
    return row[0] if figures.get("awaiting_confirmation") else None


def record_decision(conn: duckdb.DuckDBPyConnection, facts: DayFacts, decision: Decision) -> None:
    """The gate's decision for the day, kept for `champion_model` to apply (one row per
    day: the latest decision), together with the gate's check result."""
    record = facts.record
    day = record["partition_date"]
    with warehouse.transaction(conn):
        warehouse.replace_rows(conn, "ml.gate_decisions", {"partition_date": day}, {
            "partition_date": day, "candidate_version": record["candidate_version"],
            "compared_with": record.get("champion_version"), "in_service": facts.in_service,
            "promote": decision.promote,
            "decision": json.dumps(asdict(decision), default=str), "decided_at": warehouse.now()},
            own_transaction=False)
        warehouse.record_check(conn, day, *GATE, decision.promote, "; ".join(decision.reasons),
                               own_transaction=False)


def apply_decision(conn: duckdb.DuckDBPyConnection, models: model_store.Models, record: dict,
                   actor: str) -> tuple[Decision, str | None]:
    """Apply the gate's recorded decision for the evaluation in ``record``: the champion
    moves only when the gate promoted this candidate (or confirmed an earlier one:
    ``Decision.version``), every blocking data check still
    passes, and the champion in service is the one the gate saw. Every application is
    appended to `ml.promotions`. Returns the decision applied and the champion after.
    The pointer is held from its reading to its move (`model_store.champion_lock`)."""
    with model_store.champion_lock(models):
        return _apply_decision(conn, models, record, actor)


def _apply_decision(conn, models, record, actor) -> tuple[Decision, str | None]:
    day, candidate = record["partition_date"], record["candidate_version"]
    current = model_store.champion_version(models)
    row = conn.execute("SELECT candidate_version, compared_with, in_service, decision "
                       "FROM ml.gate_decisions WHERE partition_date = ?", [day]).fetchone()
    # The gate's decision on this very evaluation (same candidate, same champion
    # compared with; a new evaluation of the day deletes the decision on the old one).
    recorded = (Decision(**json.loads(row[3])) if row is not None and row[0] == candidate
                and row[1] == record.get("champion_version") else None)
    if current == candidate or (recorded is not None and recorded.promote
                                and recorded.version is not None and recorded.version == current):
        # A re-run: the champion stays (the gate never demotes; rolling back is the
        # operator's call).
        reasons = recorded.reasons if recorded else []
        decision = Decision(True, reasons if reasons[:1] == [RERUN] else [RERUN, *reasons],
                            recorded.figures if recorded else {}, version=current)
    elif recorded is None:
        decision = Decision(False, [f"promotion_gate has not decided on {candidate} for {day}; "
                                    "run the gate (model_evaluation:promotion_gate) first"])
    else:
        decision = recorded
        problems = warehouse.failed_or_missing_checks(conn, day, DATA_CHECKS)
        if problems:
            decision = Decision(False, ["blocking checks upstream did not pass: "
                                        + "; ".join(problems)],
                                {"policy": recorded.figures.get("policy")})
        elif decision.promote and current != row[2]:
            decision = Decision(False, [
                f"the champion in service changed since the gate decided ({row[2] or 'none'} "
                f"→ {current}); materialise model_evaluation again"], decision.figures)
    new = (decision.version or candidate) if decision.promote else current
    change_champion(conn, models, new_version=new, reasons=decision.reasons,
                    figures=decision.figures, actor=actor, partition_date=day,
                    candidate=candidate, previous=record.get("champion_version"),
                    promoted=decision.promote, audit_actor="gate",
                    move=decision.promote and new != current)
    return decision, new


def change_champion(conn: duckdb.DuckDBPyConnection, models: model_store.Models, *,
                    new_version: str | None, reasons: list[str], figures: dict, actor: str,
                    partition_date: str | None = None, candidate: str | None = None,
                    previous: str | None = None, promoted: bool = True,
                    audit_actor: str | None = None, rollback: bool = False,
                    move: bool = True) -> dict | None:
    """The one way the champion changes (or a decision not to change it is recorded):
    an audit row in `ml.promotions` (``reasons`` as ``{"reasons": [...], "figures":
    {...}}``) and the pointer move, in one transaction: if the move fails, the row rolls
    back. ``rollback`` steps back along the champion history instead of naming a
    version; ``move=False`` records a decision that leaves the champion where it is.
    Returns the new pointer, or None when the pointer did not move. If the audit row's
    commit fails after the pointer moved (a full disk), the pointer and history are put
    back as they were: no move without its audit row."""
    with model_store.champion_lock(models):
        saved = model_store.pointer_files(models)
        try:
            return _audited_move(conn, models, new_version=new_version, reasons=reasons,
                                 figures=figures, actor=actor, partition_date=partition_date,
                                 candidate=candidate, previous=previous, promoted=promoted,
                                 audit_actor=audit_actor, rollback=rollback, move=move)
        except BaseException:
            model_store.restore_pointer_files(models, saved)
            raise


def _audited_move(conn, models, *, new_version, reasons, figures, actor, partition_date,
                  candidate, previous, promoted, audit_actor, rollback, move) -> dict | None:
    with warehouse.transaction(conn):
        # Append-only: a re-run adds its decision, the earlier ones stay in the audit.
        conn.execute("INSERT INTO ml.promotions (decided_at, partition_date, candidate_version, "
                     "previous_champion, new_champion, promoted, actor, reasons, moved) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [warehouse.now(), partition_date, candidate, previous, new_version,
                      promoted, audit_actor or actor,
                      json.dumps({"reasons": reasons, "figures": figures}, default=str),
                      rollback or move])
        reason = "; ".join(reasons)
        if rollback:
            return model_store.rollback_champion(models, reason, actor)
        if move:
            return model_store.set_champion(models, new_version, reason, actor)
    return None


def promote(settings: Settings, version: str, reason: str, actor: str) -> dict:
    """Operator override: put ``version`` in service. Refuses a model that does not
    load safely."""
    if not reason.strip():
        raise ValueError("a promotion needs a reason (--reason)")
    # Missing or tampered: refused here.
    model_store.load_model(settings.models, version, settings.training.model)
    # Holding the pointer (and, on the embedded file, the warehouse) keeps the gate
    # (champion_model) from moving it meanwhile: it is read and moved under the lock,
    # taken after the warehouse as the gate takes them (never the other way round).
    with warehouse.operator_connect(settings.warehouse) as conn, \
            model_store.champion_lock(settings.models):
        # A corrupt pointer is what an operator's promotion repairs: read as none.
        previous = model_store.champion_version(settings.models, tolerate_corrupt=True)
        return change_champion(conn, settings.models, new_version=version,
                               reasons=[f"override: {reason}"], figures={}, actor=actor,
                               candidate=version, previous=previous)


def rollback(settings: Settings, reason: str, actor: str) -> dict:
    """Operator action: put the previous champion back in service."""
    if not reason.strip():
        raise ValueError("a rollback needs a reason (--reason)")
    models = settings.models
    with warehouse.operator_connect(settings.warehouse) as conn, \
            model_store.champion_lock(models):
        previous = model_store.champion_version(models)
        target = model_store.rollback_target(models)  # nothing to roll back to: raises
        model_store.load_model(models, target, settings.training.model)  # still loads safely
        return change_champion(conn, models, new_version=target,
                               reasons=[f"rollback: {reason}"], figures={}, actor=actor,
                               previous=previous, rollback=True)
