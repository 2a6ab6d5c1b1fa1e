"""The promotion rule on recorded evaluations, and the decision the gate records and
champion_model applies (plain Python on a scratch warehouse)."""

import json

import pytest

from flywheel_assets import warehouse
from flywheel_assets.evaluate import evaluation, promotion
from flywheel_assets.settings import Settings
from flywheel_assets.train import model_store
from flywheel_assets.train.model import train
from flywheel_assets_tests.helpers import tiny_training_rows


def _record(delta_ci=(0.1, 0.3), cand_cov=0.8, champ_cov=0.8, cand_gini=0.7, champ_gini=0.7,
            slice_cand=0.9, slice_champ=0.9, untrusted=(), versus_logging_ci=(0.1, 0.3),
            champion="m1"):
    def policy(cov, gini, problems=()):
        return {"dr": {"value": 6.0}, "support": 1.0, "catalog_coverage": cov,
                "exposure_gini": gini, "trusted": not problems,
                "untrusted_because": list(problems)}

    def diff(ci):
        return {"dr": {"delta": sum(ci) / 2, "ci_low": ci[0], "ci_high": ci[1], "level": 0.95}}
    policies = {"candidate": policy(cand_cov, cand_gini, untrusted),
                "logging": policy(champ_cov, champ_gini)}
    ope = {"policies": policies, "value": "dcg", "family": "exposure",
           "versus_logging": diff(versus_logging_ci)}
    if champion:
        policies["champion"] = policy(champ_cov, champ_gini)
        ope["difference"] = diff(delta_ci)
    return {"k": 10, "champion_version": champion, "off_policy": ope,
            "slices": {"new_items": {"requests": 1500, "candidate": slice_cand,
                                     "champion": slice_champ}},
            "holdout": {"candidate": {"ndcg_at_k": 0.8}, "champion": {"ndcg_at_k": 0.7}},
            "holdout_difference": {"versus": "champion", "delta": 0.1, "ci_low": 0.05,
                                   "ci_high": 0.15, "level": 0.95, "requests": 400}}


def test_promotion_rule():
    assert promotion.decide(_record()).promote
    assert not promotion.decide(_record(delta_ci=(-0.1, 0.3))).promote
    assert "not better with confidence" in promotion.decide(_record(delta_ci=(-0.1, 0.3))).reasons[0]
    blocked = promotion.decide(_record(), ["raw_impressions:rows_reconcile failed"])
    stale = promotion.decide(_record(), older_than_champion="older")
    assert not blocked.promote and not stale.promote
    assert "rows_reconcile" in blocked.reasons[0]
    strict = promotion.GatePolicy(min_effect=0.2)
    assert not promotion.decide(_record(delta_ci=(0.1, 0.3)), policy=strict).promote


def test_before_any_champion_the_candidate_must_beat_the_incumbent():
    """The policy that produced the logs is the champion until a model of ours beats it."""
    worse = promotion.decide(_record(champion=None, versus_logging_ci=(-1, -0.5)))
    assert not worse.promote
    assert "incumbent" in worse.reasons[0] and "not better" in worse.reasons[0]
    better = promotion.decide(_record(champion=None, versus_logging_ci=(0.2, 0.4)))
    assert better.promote and "incumbent" in better.figures["primary"]["versus"]


def test_an_untrustworthy_estimate_holds_the_champion_with_its_reason():
    held = promotion.decide(_record(delta_ci=(0.5, 0.9), untrusted=["effective sample size 2 < 200"]))
    assert not held.promote
    assert held.reasons[0].startswith("untrustworthy estimate")
    assert "effective sample size 2" in held.reasons[0]


def test_guards_hold_back_a_better_but_degenerate_candidate():
    less_coverage = promotion.decide(_record(cand_cov=0.4, champ_cov=0.8))
    more_concentrated = promotion.decide(_record(cand_gini=0.8, champ_gini=0.7))
    worse_slice = promotion.decide(_record(slice_cand=0.8, slice_champ=0.9))
    for d in (less_coverage, more_concentrated, worse_slice):
        assert not d.promote and any("guard" in r and "regressed" in r for r in d.reasons)
    # Within the healthy levels a change against a very diverse champion is fine.
    assert promotion.decide(_record(cand_gini=0.55, champ_gini=0.3)).promote
    assert promotion.decide(_record(cand_cov=0.6, champ_cov=0.95)).promote
    # A slice with too few requests to judge does not guard.
    small = _record(slice_cand=0.5)
    small["slices"]["new_items"]["requests"] = 10
    assert promotion.decide(small).promote


def test_without_off_policy_evidence_the_gate_uses_the_holdout_and_says_when_it_is_empty():
    no_pools = _record()
    no_pools["off_policy"] = None
    no_pools["off_policy_unavailable"] = "no pools and a catalogue of 5000 items"
    decision = promotion.decide(no_pools)
    assert "catalogue of 5000 items" in decision.figures["primary"]["metric"]
    assert decision.promote  # holdout interval 0.05 .. 0.15 clears 0
    for informative in (0, 5):  # a handful of requests that can rank is no information either
        no_pools["holdout_difference"] = {"versus": "champion", "delta": 0.29, "ci_low": 0.29,
                                          "ci_high": 0.29, "level": 0.95, "requests": informative}
        empty = promotion.decide(no_pools)
        assert not empty.promote and empty.reasons[0].startswith("no information")


# --- the decision recorded by the gate and applied by champion_model ------------------


DAY = "2026-01-05"


@pytest.fixture
def flywheel(tmp_path):
    """Three small models (trained for days 1, 5 and 9), m1 in service, and a warehouse
    whose blocking data checks for DAY all passed. The recording and applying of a
    decision are tested under the one-day rule; the confirmed rule below."""
    settings = Settings.from_env(tmp_path, {"gate.rule": "single"})
    for i, (version, day) in enumerate([("m1", "2026-01-01"), ("m2", DAY), ("m3", "2026-01-09")]):
        model_store.save_model(settings.models_dir, version, train(tiny_training_rows(i), params={"max_iter": 5}),
                               {"partition_date": day})
    model_store.set_champion(settings.models_dir, "m1", "first", "test")
    with warehouse.connect(settings.warehouse_path) as conn:
        for asset, check in promotion.DATA_CHECKS:
            warehouse.record_check(conn, DAY, asset, check, True)
        yield settings, conn


def _day_record(candidate="m2", champion="m1"):
    return {**_record(), "partition_date": DAY, "candidate_version": candidate,
            "champion_version": champion}


def _gate(settings, conn, record):
    facts = promotion.day_facts(conn, settings.models_dir, record)
    decision = promotion.decide_for_day(facts, settings.gate)
    promotion.record_decision(conn, facts, decision)
    return decision


def _last_promotion(conn):
    row = conn.execute("SELECT promoted, new_champion, actor, reasons FROM ml.promotions "
                       "ORDER BY decided_at DESC LIMIT 1").fetchone()
    return row[0], row[1], row[2], json.loads(row[3])


def test_the_gate_records_its_decision_once_and_champion_model_applies_it(flywheel):
    settings, conn = flywheel
    record = _day_record()
    assert _gate(settings, conn, record).promote
    gate_row = conn.execute("SELECT candidate_version, in_service, promote FROM ml.gate_decisions "
                            "WHERE partition_date = ?", [DAY]).fetchone()
    assert gate_row == ("m2", "m1", True)
    assert not warehouse.failed_or_missing_checks(conn, DAY, [promotion.GATE])
    decision, champion = promotion.apply_decision(conn, settings.models_dir, record, "dagster:run")
    assert decision.promote and champion == "m2"
    assert model_store.champion_version(settings.models_dir) == "m2"
    promoted, new, actor, reasons = _last_promotion(conn)
    assert (promoted, new, actor) == (True, "m2", "gate")
    assert set(reasons) == {"reasons", "figures"} and "primary" in reasons["figures"]


def test_a_data_check_failing_after_the_gate_holds_the_champion(flywheel):
    settings, conn = flywheel
    record = _day_record()
    assert _gate(settings, conn, record).promote
    warehouse.record_check(conn, DAY, "raw_items", "rows_reconcile", False, "planted failure")
    decision, champion = promotion.apply_decision(conn, settings.models_dir, record, "dagster:run")
    assert not decision.promote and champion == "m1"
    assert model_store.champion_version(settings.models_dir) == "m1"
    assert "planted failure" in _last_promotion(conn)[3]["reasons"][0]


def test_an_operator_change_between_gate_and_apply_is_not_overridden(flywheel):
    settings, conn = flywheel
    record = _day_record()
    assert _gate(settings, conn, record).promote
    promotion.promote(settings, "m3", "test: operator's choice", "operator:test")
    decision, champion = promotion.apply_decision(conn, settings.models_dir, record, "dagster:run")
    assert not decision.promote and champion == "m3"
    assert model_store.champion_version(settings.models_dir) == "m3"
    assert "changed since the gate decided" in decision.reasons[0]


def test_a_rerun_never_demotes_even_without_a_recorded_decision(flywheel):
    settings, conn = flywheel
    model_store.set_champion(settings.models_dir, "m2", "promoted earlier", "test")
    decision, champion = promotion.apply_decision(conn, settings.models_dir, _day_record(),
                                                  "dagster:run")
    assert decision.promote and champion == "m2" and decision.reasons[0] == promotion.RERUN
    assert model_store.champion_version(settings.models_dir) == "m2"
    promoted, new, _, _ = _last_promotion(conn)
    assert promoted and new == "m2"


def test_a_new_evaluation_of_the_day_needs_the_gate_again(flywheel):
    settings, conn = flywheel
    record = _day_record()
    assert _gate(settings, conn, record).promote
    # The day is evaluated again (its evidence may now say otherwise); no gate has run.
    promotion_record = {**record, "holdout_rows": 1, "holdout_requests": 1}
    evaluation.record_evaluation(conn, promotion_record, settings.reports_dir)
    decision, champion = promotion.apply_decision(conn, settings.models_dir, record, "dagster:run")
    assert not decision.promote and champion == "m1"
    assert "has not decided" in decision.reasons[0]


def test_a_decision_against_another_champion_is_not_applied(flywheel):
    settings, conn = flywheel
    assert _gate(settings, conn, _day_record()).promote
    # The same candidate, evaluated against no champion: not what the gate judged.
    decision, champion = promotion.apply_decision(conn, settings.models_dir,
                                                  _day_record(champion=None), "dagster:run")
    assert not decision.promote and champion == "m1"


def test_without_a_gate_decision_nothing_is_promoted(flywheel):
    settings, conn = flywheel
    decision, champion = promotion.apply_decision(conn, settings.models_dir, _day_record(),
                                                  "dagster:run")
    assert not decision.promote and champion == "m1"
    assert "has not decided" in decision.reasons[0]


def test_a_candidate_older_than_the_champion_in_service_is_never_promoted(flywheel):
    settings, conn = flywheel
    model_store.set_champion(settings.models_dir, "m3", "newer", "test")
    decision = _gate(settings, conn, _day_record(champion="m3"))
    assert not decision.promote and "before the champion in service" in decision.reasons[0]


# --- gate.rule = confirmed: a pass on the candidate's day, then on the next day's logs ----

NEXT = "2026-01-06"


def _confirmed(settings):
    return Settings.from_env(settings.data_dir, {"gate.rule": "confirmed"})


def _next_day_record(pending_ci, candidate="m3", pending="m2"):
    """The next day: a new candidate (no better) and yesterday's awaiting confirmation."""
    record = {**_record(delta_ci=(-0.2, 0.1)), "partition_date": NEXT,
              "candidate_version": candidate, "champion_version": "m1",
              "pending_version": pending}
    ope = record["off_policy"]
    ope["policies"]["pending"] = dict(ope["policies"]["candidate"])
    ope["differences"] = {"candidate": ope["difference"], "pending": {"dr": {
        "delta": sum(pending_ci) / 2, "ci_low": pending_ci[0], "ci_high": pending_ci[1]}}}
    record["slices"]["new_items"]["pending"] = 0.9
    return record


def test_a_first_pass_awaits_the_next_days_logs(flywheel):
    settings, conn = flywheel
    settings = _confirmed(settings)
    for asset, check in promotion.DATA_CHECKS:
        warehouse.record_check(conn, NEXT, asset, check, True)
    first = _gate(settings, conn, _day_record())
    assert not first.promote and first.reasons[0].startswith(promotion.AWAITS)
    assert first.figures["awaiting_confirmation"]
    promotion.apply_decision(conn, settings.models_dir, _day_record(), "dagster:run")
    assert model_store.champion_version(settings.models_dir) == "m1"
    # The next day's evaluation finds it, against the same champion only.
    assert promotion.awaiting_confirmation(conn, NEXT, "m3", "m1") == "m2"
    assert promotion.awaiting_confirmation(conn, NEXT, "m3", "m3") is None
    assert promotion.awaiting_confirmation(conn, DAY, "m3", "m1") is None
    confirmed = _gate(settings, conn, _next_day_record(pending_ci=(0.05, 0.2)))
    assert confirmed.promote and confirmed.version == "m2"
    assert confirmed.reasons[0].startswith(f"m2 confirmed on the logs of {NEXT}")
    record = _next_day_record(pending_ci=(0.05, 0.2))
    decision, champion = promotion.apply_decision(conn, settings.models_dir, record, "dagster:run")
    assert decision.promote and champion == "m2"
    assert model_store.champion_version(settings.models_dir) == "m2"
    # A re-run of the next day keeps m2 and puts nothing else in service: the gate's
    # decision again, and its application.
    again = _gate(settings, conn, record)
    assert again.promote and again.version == "m2" and again.reasons[0] == promotion.RERUN
    decision, champion = promotion.apply_decision(conn, settings.models_dir, record, "dagster:run")
    assert champion == "m2" and model_store.champion_version(settings.models_dir) == "m2"


def test_a_pass_the_next_days_logs_do_not_confirm_is_not_promoted(flywheel):
    settings, conn = flywheel
    settings = _confirmed(settings)
    for asset, check in promotion.DATA_CHECKS:
        warehouse.record_check(conn, NEXT, asset, check, True)
    _gate(settings, conn, _day_record())
    held = _gate(settings, conn, _next_day_record(pending_ci=(-0.05, 0.2)))
    assert not held.promote and held.version is None
    assert any(r.startswith(f"m2 not confirmed on the logs of {NEXT}") for r in held.reasons)
    assert held.figures["confirmation"]["primary"]["ci_low"] == -0.05


def test_a_slice_guard_is_a_paired_non_inferiority_bound():
    """Points 0.02 apart pass the old point rule (tolerance 0.03); what decides is the
    lower end of the paired difference's interval."""
    record = _record(slice_cand=0.88, slice_champ=0.9)
    record["slices"]["new_items"]["candidate_vs_champion"] = {
        "delta": -0.02, "ci_low": -0.05, "ci_high": 0.01, "level": 0.9}
    held = promotion.decide(record)
    assert not held.promote and "lower bound of the difference -0.0500" in held.reasons[1]
    record["slices"]["new_items"]["candidate_vs_champion"]["ci_low"] = -0.025
    assert promotion.decide(record).promote
