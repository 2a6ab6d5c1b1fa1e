"""The promotion rule (DESIGN §7): better with confidence, no guard regressed, checks passed.

Primary metric: the candidate's ranking valued off-policy on the day's logged requests
(doubly robust DCG@10) minus the champion's; the lower end of the paired bootstrap
interval must clear the minimum effect. When the logs cannot support that estimate
(no candidate pools, or a logging policy that never explores what the candidate
chooses), the primary metric falls back to examined-only NDCG@10 on the holdout, with
the same kind of interval; the reasons say which was used.

Guards, each within its tolerance: catalogue coverage and exposure Gini of the top-10s
(a flywheel that feeds on its own exposure drifts toward a few popular items; a level
inside the healthy bounds passes whatever the champion's), and
NDCG@10 on every slice with enough requests (new items, new users, devices).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from flywheel_assets.settings import Settings


# The gate's settings, by their name in `Settings` (where they are documented): one
# source for the defaults.
_SETTING_OF = {"confidence": "promotion_confidence", "min_effect": "promotion_min_effect",
               "coverage_tolerance": "coverage_tolerance",
               "concentration_tolerance": "concentration_tolerance",
               "healthy_coverage": "healthy_coverage",
               "healthy_exposure_gini": "healthy_exposure_gini",
               "slice_tolerance": "slice_tolerance", "min_slice_requests": "min_slice_requests",
               "min_ope_support": "min_ope_support"}
_DEFAULTS = {f.name: f.default for f in fields(Settings)}


@dataclass(frozen=True)
class GatePolicy:
    """The promotion rule's thresholds (defaults: `Settings`). A candidate that loses
    coverage or gains concentration against a very diverse (e.g. barely trained)
    champion is only held back once it leaves the healthy levels."""

    confidence: float = _DEFAULTS["promotion_confidence"]
    min_effect: float = _DEFAULTS["promotion_min_effect"]
    coverage_tolerance: float = _DEFAULTS["coverage_tolerance"]
    concentration_tolerance: float = _DEFAULTS["concentration_tolerance"]
    healthy_coverage: float = _DEFAULTS["healthy_coverage"]
    healthy_exposure_gini: float = _DEFAULTS["healthy_exposure_gini"]
    slice_tolerance: float = _DEFAULTS["slice_tolerance"]
    min_slice_requests: int = _DEFAULTS["min_slice_requests"]
    min_ope_support: float = _DEFAULTS["min_ope_support"]

    @classmethod
    def from_settings(cls, s: Settings) -> "GatePolicy":
        return cls(**{name: getattr(s, setting) for name, setting in _SETTING_OF.items()})


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    # Every figure the decision rests on: primary evidence, guards, policy.
    figures: dict = field(default_factory=dict)


def primary_evidence(record: dict, policy: GatePolicy) -> dict | None:
    """Candidate − champion on the primary metric, with its interval and its source."""
    ope = record.get("off_policy") or {}
    if "difference" in ope:
        pol = ope["policies"]
        supported = min(pol["candidate"]["support"], pol["champion"]["support"])
        if supported >= policy.min_ope_support:
            return {"metric": "off-policy DCG@10 (doubly robust)",
                    "candidate": pol["candidate"]["dr"]["value"],
                    "champion": pol["champion"]["dr"]["value"],
                    "support": supported, **ope["difference"]["dr"]}
    holdout = record.get("holdout_difference")
    if holdout:
        why = ("no logged candidate pools" if "difference" not in ope else
               "logged pools do not support the candidate's choices (no exploration?)")
        return {"metric": f"holdout NDCG@10, examined impressions ({why})",
                "candidate": record["holdout"]["candidate"]["ndcg_at_10"],
                "champion": record["holdout"]["champion"]["ndcg_at_10"], **holdout}
    return None


def guards(record: dict, policy: GatePolicy) -> list[dict]:
    """Each guard with both figures, its limit and whether it holds."""
    out = []
    ope = record.get("off_policy") or {}
    if "champion" in ope.get("policies", {}):
        cand, champ = ope["policies"]["candidate"], ope["policies"]["champion"]
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
        if "champion" not in s or s["requests"] < policy.min_slice_requests:
            continue
        limit = s["champion"] - policy.slice_tolerance
        out.append({"guard": f"slice {name} ndcg_at_10", "candidate": s["candidate"],
                    "champion": s["champion"], "limit": limit, "requests": s["requests"],
                    "ok": bool(s["candidate"] >= limit), "rule": ">="})
    return out


def decide(record: dict, blocking_problems: list[str] = (), policy: GatePolicy = GatePolicy(),
           older_than_champion: str | None = None, has_champion: bool = True) -> Decision:
    """Promote only when every blocking check passed, the candidate is not older than
    the champion in service, its primary metric beats the champion's with an interval
    whose lower end clears the minimum effect, and every guard holds. With no champion
    yet, the first candidate whose checks passed is promoted."""
    figures = {"policy": asdict(policy)}
    if blocking_problems:
        return Decision(False, ["blocking checks upstream did not pass: "
                                + "; ".join(blocking_problems)], figures)
    if older_than_champion:
        return Decision(False, [older_than_champion], figures)
    if not has_champion:
        return Decision(True, ["no champion yet: the first candidate that passes the data "
                               "checks is promoted"], figures)
    primary = primary_evidence(record, policy)
    checks = guards(record, policy)
    figures.update(primary=primary, guards=checks)
    if primary is None:
        return Decision(False, ["no evidence to compare the candidate with the champion"],
                        figures)
    reasons = []
    text = (f"{primary['metric']}: candidate {primary['candidate']:.4f} vs champion "
            f"{primary['champion']:.4f}, delta {primary['delta']:+.4f} "
            f"({policy.confidence:.0%} interval {primary['ci_low']:+.4f} .. "
            f"{primary['ci_high']:+.4f}; minimum effect {policy.min_effect:+.4f})")
    better = primary["ci_low"] > policy.min_effect
    reasons.append(("better with confidence: " if better else "not better with confidence: ")
                   + text)
    failed = [g for g in checks if not g["ok"]]
    for g in failed:
        reasons.append(f"guard {g['guard']} regressed: candidate {g['candidate']:.4f} vs "
                       f"champion {g['champion']:.4f} (limit {g['rule']} {g['limit']:.4f})")
    if better and not failed:
        reasons.append(f"all {len(checks)} guards within tolerance")
    return Decision(better and not failed, reasons, figures)
