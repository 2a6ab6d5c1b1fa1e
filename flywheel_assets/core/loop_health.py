"""Is the loop degenerating? Concentration of the policy in service, rotation by rotation.

A flywheel that learns from its own exposure can narrow onto a few items a little more
every day, each step within the gate's per-rotation tolerance. This looks at the trend:
the exposure Gini of the slates the model in service would serve, on each day's logged
requests (from `model_evaluation`), and calls it rising when it went up at every one of
the last few rotations.
"""

from __future__ import annotations

import json

import duckdb


def in_service_concentration(conn: duckdb.DuckDBPyConnection, up_to: str,
                             rotations: int) -> list[dict]:
    """Per day (oldest first, at most ``rotations`` + 1 days up to ``up_to``): the exposure
    Gini and catalogue coverage of the model that was in service after that day's gate."""
    rows = conn.execute("""
        SELECT e.partition_date, e.metrics, p.promoted
        FROM ml.model_evaluations e
        LEFT JOIN ml.promotions p ON p.partition_date = e.partition_date AND p.actor = 'gate'
        WHERE e.partition_date <= ?
        ORDER BY e.partition_date DESC LIMIT ?""", [up_to, rotations + 1]).fetchall()
    out = []
    for day, metrics, promoted in reversed(rows):
        policies = (json.loads(metrics).get("off_policy") or {}).get("policies", {})
        chosen = "candidate" if promoted or "champion" not in policies else "champion"
        if chosen in policies:
            out.append({"date": str(day), "model": chosen,
                        "exposure_gini": policies[chosen]["exposure_gini"],
                        "catalog_coverage": policies[chosen]["catalog_coverage"]})
    return out


def concentration_rising(series: list[dict], rotations: int, min_step: float = 0.0) -> bool:
    """True when the Gini rose by more than ``min_step`` at each of the last
    ``rotations`` rotations (needs ``rotations`` + 1 points)."""
    if len(series) < rotations + 1:
        return False
    gini = [p["exposure_gini"] for p in series[-(rotations + 1):]]
    return all(b - a > min_step for a, b in zip(gini, gini[1:]))
