"""The promotion rule on recorded evaluations (plain Python)."""

from flywheel_assets.evaluate import promotion


def _record(delta_ci=(0.1, 0.3), cand_cov=0.8, champ_cov=0.8, cand_gini=0.7, champ_gini=0.7,
            slice_cand=0.9, slice_champ=0.9, support=1.0):
    def policy(cov, gini):
        return {"dr": {"value": 6.0}, "support": support, "catalog_coverage": cov,
                "exposure_gini": gini}
    return {"off_policy": {"policies": {"candidate": policy(cand_cov, cand_gini),
                                        "champion": policy(champ_cov, champ_gini)},
                           "difference": {"dr": {"delta": sum(delta_ci) / 2, "ci_low": delta_ci[0],
                                                 "ci_high": delta_ci[1], "level": 0.95}}},
            "slices": {"new_items": {"requests": 500, "candidate": slice_cand,
                                     "champion": slice_champ}},
            "holdout": {"candidate": {"ndcg_at_10": 0.8}, "champion": {"ndcg_at_10": 0.7}},
            "holdout_difference": {"delta": 0.1, "ci_low": 0.05, "ci_high": 0.15, "level": 0.95}}


def test_promotion_rule():
    assert promotion.decide(_record()).promote
    assert not promotion.decide(_record(delta_ci=(-0.1, 0.3))).promote
    assert "not better with confidence" in promotion.decide(_record(delta_ci=(-0.1, 0.3))).reasons[0]
    first = promotion.decide(_record(delta_ci=(-1, -0.5)), has_champion=False)
    blocked = promotion.decide(_record(), ["raw_impressions:rows_reconcile failed"])
    stale = promotion.decide(_record(), older_than_champion="older")
    assert first.promote and not blocked.promote and not stale.promote
    assert "rows_reconcile" in blocked.reasons[0]
    strict = promotion.GatePolicy(min_effect=0.2)
    assert not promotion.decide(_record(delta_ci=(0.1, 0.3)), policy=strict).promote


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


def test_without_supported_off_policy_evidence_the_gate_uses_the_holdout():
    unsupported = promotion.decide(_record(delta_ci=(0.5, 0.9), support=0.4))
    assert "holdout" in unsupported.figures["primary"]["metric"]
    no_pools = _record()
    no_pools["off_policy"] = None
    decision = promotion.decide(no_pools)
    assert "no logged candidate pools" in decision.figures["primary"]["metric"]
    assert decision.promote  # holdout interval 0.05 .. 0.15 clears 0
