"""The promotion rule (DESIGN §7, first version): better on the holdout, or first."""

from __future__ import annotations

from dataclasses import dataclass, field

PRIMARY_METRIC = "ndcg_at_10"


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def decide(candidate: dict, champion: dict | None, blocking_problems: list[str] = (),
           min_effect: float = 0.0, metric: str = PRIMARY_METRIC,
           older_than_champion: str | None = None) -> Decision:
    """Promote when every blocking check passed and the candidate beats the champion's
    primary metric by more than ``min_effect`` on the same holdout; with no champion
    yet, the first candidate whose checks passed is promoted. A candidate trained on
    older data than the champion in service is never promoted by the gate (a re-run
    of an old day must not roll the model back; that is the operator's call)."""
    if blocking_problems:
        return Decision(False, ["blocking checks upstream did not pass: " + "; ".join(blocking_problems)])
    if older_than_champion:
        return Decision(False, [older_than_champion])
    if champion is None:
        return Decision(True, ["no champion yet: the first candidate that passes the data "
                               "checks is promoted"])
    delta = candidate[metric] - champion[metric]
    text = (f"{metric}: candidate {candidate[metric]:.4f} vs champion {champion[metric]:.4f} "
            f"(delta {delta:+.4f}, minimum effect {min_effect:+.4f})")
    if delta > min_effect:
        return Decision(True, [f"better on the holdout: {text}"])
    return Decision(False, [f"not better on the holdout: {text}"])
