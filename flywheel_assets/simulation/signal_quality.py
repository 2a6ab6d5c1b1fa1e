"""How valid the product's training signal is, judged with the world's hidden truth:
bot filter precision and recall against the known bots, the estimated position-bias
curve against the true examination curve, and the effective sample size of the
training weights. Reads the warehouse (read-only); the product never reads this."""

from __future__ import annotations

import numpy as np

from flywheel_assets import warehouse
from flywheel_assets.ingest.pseudonymise import user_key
from flywheel_assets.settings import Settings
from flywheel_assets.simulation import truth
from flywheel_assets.simulation.config import WorldConfig
from flywheel_assets.train.training_set import effective_sample_size


def measure(settings: Settings, config: WorldConfig, date: str) -> dict:
    day = config.day_index(date)
    pop = truth.population(config, day)
    bots = {user_key(u, settings.pseudonym_secret)
            for u in pop.users["user_id"].to_numpy()[pop.is_bot]}
    # Relative to position 1, as the product estimates it.
    true_curve = truth.examination_curve(config) / truth.examination_curve(config)[0]
    with warehouse.connect(settings.warehouse) as conn:
        # The filter's input: users whose feedback reached curation (consent given).
        active = {r[0] for r in conn.execute(
            "SELECT DISTINCT user_key FROM curated.feedback_events WHERE partition_date = ?",
            [date]).fetchall()}
        flagged = {r[0] for r in conn.execute(
            "SELECT user_key FROM curated.flagged_users WHERE partition_date = ?", [date]).fetchall()}
        curve = dict(conn.execute("SELECT position, examination FROM curated.position_bias "
                                  "WHERE partition_date = ?", [date]).fetchall())
        ess = effective_sample_size(conn, date)
    active_bots = bots & active
    # A curve the logs could not identify (no exploration) has no estimate to judge.
    estimated = np.array([np.nan if curve.get(k) is None else curve[k]
                          for k in range(1, len(true_curve) + 1)], dtype="float64")
    rel_error = np.abs(estimated - true_curve) / true_curve
    return {
        "bot_filter_precision": len(flagged & bots) / len(flagged) if flagged else None,
        "bot_filter_recall": len(flagged & active_bots) / len(active_bots) if active_bots else None,
        "bots_active": len(active_bots), "users_flagged": len(flagged),
        "position_bias_max_rel_error": (float(np.nanmax(rel_error))
                                        if np.isfinite(rel_error).any() else None),
        "effective_sample_size": ess or None,
    }
