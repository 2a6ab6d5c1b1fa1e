"""``flywheel benchmark poisoning``: how far can a bot ring push its items up the
champion's rankings, with the product's bot defences on and off?

One world, turned twice from the same seed (`benchmarks.run_arms`, each arm a demo run
in its own data directory): ``bot_fraction`` (default 5%) of the users are a coordinated
ring that saves the world's five ``bot_targets`` whenever it is shown them and skips
everything else, and the ``bot_attack`` scenario multiplies the ring's traffic by four on
the attack days (``--attack FIRST-LAST``, default the second half of the run).

- **defences on**: the product's defaults.
- **defences off**: every bot defence switched off by settings overrides only
  (:data:`DEFENCES_OFF`): the curation filters (``curation.filters``: flagged users'
  rows, the per-user cap, contradictions and low information; bots left in the
  position-bias estimate) and the bot detector itself (``curation_rules``' thresholds
  out of reach: `curate/filters.flag_bots` runs whatever ``curation.filters`` says,
  and off-policy evaluation, the gate's evidence, leaves out whom it flags). The
  label-noise filter is off in both arms (the product's default). What is no bot
  defence stays on in both: deduplication, consent, and the gate with its guards (the
  gold-set guard, on people's labels, judges every candidate in both arms).

After the run, for every day and arm, the champion that was in service after that
day's rotation (the oracle's ``champion_version``; every version stays in the model
store and every day's profiles in the warehouse, so the measurement is the same as one
taken on the day) scores the whole catalogue for a fixed panel of human users (the
world knows who is human; the product does not), as it would serve them the next day
(the next day's catalogue, popularity with the plays so far, profiles as of the day's
end). Reported per day: the target items' mean rank (1 = top), median rank and mean
rank percentile (the share of the catalogue ranked below, 100 = top), the same for a
control set of non-target items matched on outside popularity (the catalogue before
any play; :func:`matched_controls`), where the truth would rank both sets (expected
grade), the items' popularity percentile in the world's catalogue, the exposure the
day's served slates gave both sets (from the world's truth), the bot traffic (the
world's truth: bot requests, bots) against what the product's curated tables kept of
it (bot rows caught, bot saves of targets that reached the training data, human rows
removed as bots), and the champion's oracle NDCG@10 (the cost side).

Headline: each set's rank on the day before the attack against the attack's last day,
per arm, and the targets' move net of the controls'. The record goes to
``<data dir>/benchmarks/poisoning/result.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from flywheel_assets.settings import Settings
from flywheel_assets.simulation.config import Scenario, WorldConfig

BOT_FRACTION = 0.05
PANEL_USERS = 200
CONTROLS_PER_TARGET = 5
# A threshold no user reaches: the detector's rule never fires.
UNREACHABLE = 10 ** 9
DEFENCES_ON: dict = {}
DEFENCES_OFF = {
    # Row filters of curated_feedback (flagged users, per-user cap, contradictions, low
    # information) and flagged users left out of the position-bias estimate.
    "curation.filters": False,
    # The detector: nobody is flagged, so no consumer of curated.flagged_users (off-policy
    # evaluation and the gate, engagement per request, drift) leaves bots out either.
    "curation_rules.min_gaps": UNREACHABLE,
    "curation_rules.min_reactions": UNREACHABLE,
    "curation_rules.min_saves_for_burst": UNREACHABLE,
    "curation_rules.max_requests_per_day": UNREACHABLE,
    "curation_rules.per_user_cap": UNREACHABLE,
    # Label noise (confident learning): off by default, off here.
    "curation.max_label_issue_share": 0.0,
}
ARMS = {"defences_on": DEFENCES_ON, "defences_off": DEFENCES_OFF}
LABELS = {"defences_on": "defences on", "defences_off": "defences off"}
GROUPS = ("targets", "controls")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The poisoning benchmark's options on ``flywheel benchmark`` (``--days``,
    ``--seed``, ``--jobs``, ``--requests-per-day`` and ``--data-dir`` are shared)."""
    p.add_argument("--attack", metavar="FIRST-LAST",
                   help="poisoning: the bot_attack days (default: the second half of --days)")
    p.add_argument("--bot-fraction", type=float, default=BOT_FRACTION,
                   help=f"poisoning: share of users in the bot ring (default {BOT_FRACTION})")
    p.add_argument("--panel", type=int, default=PANEL_USERS,
                   help=f"poisoning: human users whose rankings are measured (default {PANEL_USERS})")
    p.add_argument("--measure-only", action="store_true",
                   help="poisoning: measure the arms of the last run in the data dir again "
                        "(no new run)")
    p.add_argument("--users", type=int, help=f"poisoning: default {WorldConfig.n_users}")
    p.add_argument("--items", type=int, help=f"poisoning: default {WorldConfig.n_items}")


def attack_days(text: str | None, days: int) -> tuple[int, int]:
    """``FIRST-LAST`` (or ``FIRST``: to the last day); by default the second half. The
    attack needs a day before it (the baseline) and must end within the run."""
    if text is None:
        first, last = days // 2 + 1, days
    else:
        head, _, tail = text.partition("-")
        first, last = int(head), int(tail) if tail else days
    if not 2 <= first <= last <= days:
        raise ValueError(f"attack days {first}-{last}: need 2 <= first <= last <= --days "
                         f"({days}); the day before the attack is the baseline")
    return first, last


def world_config(settings: Settings, seed: int, attack: tuple[int, int],
                 bot_fraction: float = BOT_FRACTION, **world) -> WorldConfig:
    """The benchmark's world: the product's serving system as ``settings`` configure
    it, the ring of ``bot_fraction``, the attack on ``attack`` days."""
    return WorldConfig(seed=seed, start_date=settings.start_date, bot_fraction=bot_fraction,
                       rerank_diversity=settings.serving.diversity,
                       rerank_popularity_balance=settings.serving.popularity_balance,
                       scenarios=(Scenario("bot_attack", *attack),), **world)


def arms(base: Path, seed: int, attack: tuple[int, int], bot_fraction: float = BOT_FRACTION,
         **world) -> dict[str, tuple[Path, dict, WorldConfig]]:
    """Both arms for `benchmarks.run_arms`: the same world, settings overrides only."""
    out = {}
    for label, overrides in ARMS.items():
        settings = Settings.from_env(base / label, overrides)
        out[label] = (base / label, overrides,
                      world_config(settings, seed, attack, bot_fraction, **world))
    return out


# --- the world's side -------------------------------------------------------------


def panel(config: WorldConfig, size: int, days: int) -> np.ndarray:
    """A fixed sample of human users (indices) of the initial population, none of whom
    asked for erasure in the run's ``days``; the same in both arms."""
    from flywheel_assets.simulation import truth

    pop = truth.population(config, days)
    gone = pop.gone.copy()
    gone[pop.deleted_today] = True
    humans = np.flatnonzero(~pop.is_bot[:config.n_users] & ~gone[:config.n_users])
    rng = np.random.default_rng([config.seed, 901])
    return np.sort(rng.choice(humans, min(size, len(humans)), replace=False))


def matched_controls(config: WorldConfig, per_target: int = CONTROLS_PER_TARGET) -> np.ndarray:
    """For each bot target, the ``per_target`` other items of the initial catalogue
    nearest to it in outside popularity (log scale; the catalogue before any play, so
    the same in both arms and untouched by the ring), each item used once."""
    from flywheel_assets.simulation import truth

    targets = truth.population(config, 1).bot_targets
    outside = np.log1p(truth.catalogue(config, 1).items["popularity"].to_numpy()[:config.n_items])
    free = np.ones(config.n_items, bool)
    free[targets] = False
    chosen = []
    for t in targets:
        distance = np.where(free, np.abs(outside - outside[t]), np.inf)
        near = np.argsort(distance, kind="stable")[:per_target]
        free[near] = False
        chosen.extend(near.tolist())
    return np.array(chosen, dtype=np.int64)


def _ranks(scores: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """U×G ranks (1 = top; ties share the mean of their places) of the items
    ``columns`` in each row of ``scores`` (U×N)."""
    picked = scores[:, columns][:, :, None]
    above = (scores[:, None, :] > picked).sum(axis=2)
    tied = (scores[:, None, :] == picked).sum(axis=2)
    return above + (tied + 1) / 2.0


def _summary(ranks: np.ndarray, n_items: int) -> dict:
    return {"mean_rank": float(ranks.mean()), "median_rank": float(np.median(ranks)),
            "mean_percentile": float(np.mean(100.0 * (n_items - ranks) / (n_items - 1)))}


def champion_ranks(settings: Settings, config: WorldConfig, day: int, version: str,
                   users: np.ndarray, groups: dict[str, np.ndarray],
                   chunk: int = 50) -> dict:
    """Where model ``version`` (the popularity policy for ``popularity``) ranks each
    group of items in the whole catalogue for ``users``, as it serves the day after
    ``day``: that day's catalogue (popularity with the plays up to ``day``), requests
    at noon, the profiles as of ``day``'s end. Beside it, where the truth ranks them
    (expected grade) and their popularity percentile."""
    from flywheel_assets.serve.serving import POPULARITY_POLICY, model_policy, popularity_policy
    from flywheel_assets.simulation import truth, world
    from flywheel_assets.simulation.traffic import candidate_frame

    served = day + 1
    directory = world.world_dir(settings.data_dir)
    cat = truth.catalogue(config, served, world.past_plays(directory, config, served))
    pop = truth.population(config, served)
    policy = (popularity_policy() if version == POPULARITY_POLICY
              else model_policy(settings, version))
    n = len(cat.items)
    date = config.date_of(served)
    columns = np.concatenate(list(groups.values()))
    model, oracle = [], []
    for start in range(0, len(users), chunk):
        part = users[start:start + chunk]
        pools = np.tile(np.arange(n), (len(part), 1))
        ts = pd.Series(np.full(len(part), pd.Timestamp(date, tz="UTC") + pd.Timedelta(hours=12)))
        frame = candidate_frame(pop.users, cat.items, part, pools, ts,
                                np.full(len(part), "mobile"))
        scores = policy.score(frame).reshape(len(part), n)
        model.append(_ranks(scores, columns))
        true = truth.expected_grade(truth.utility(config, pop.taste[part][:, None, :],
                                                  cat.latent[None, :, :], cat.quality[None, :]))
        oracle.append(_ranks(true, columns))
    model, oracle = np.vstack(model), np.vstack(oracle)
    popularity = cat.items["popularity"].to_numpy().astype("float64")
    pop_rank = _ranks(popularity[None, :], columns)[0]
    out, at = {"catalogue_items": n, "policy_version": policy.version}, 0
    for name, items in groups.items():
        cols = slice(at, at + len(items))
        at += len(items)
        out[name] = {**_summary(model[:, cols], n),
                     "truth_mean_rank": float(oracle[:, cols].mean()),
                     "truth_mean_percentile": _summary(oracle[:, cols], n)["mean_percentile"],
                     "popularity_percentile": _summary(pop_rank[cols][None, :], n)["mean_percentile"]}
    return out


def served_exposure(config: WorldConfig, directory: Path, day: int,
                    groups: dict[str, np.ndarray]) -> dict:
    """From the world's truth of ``day``: requests, bot requests, and per group the
    impressions per item per 1000 human requests of the slates actually served."""
    from flywheel_assets.simulation import world

    with np.load(world.truth_dir(directory, config, day) / "requests.npz") as npz:
        is_bot, pools, columns = npz["is_bot"], npz["pools"], npz["columns"]
    shown = np.take_along_axis(pools, columns.astype(np.int64), axis=1)[~is_bot]
    humans = max(int((~is_bot).sum()), 1)
    out = {"requests": int(len(is_bot)), "bot_requests": int(is_bot.sum()),
           "bot_request_share": float(is_bot.mean()) if len(is_bot) else 0.0}
    for name, items in groups.items():
        out[f"{name}_impressions_per_item_per_1k_human_requests"] = float(
            np.isin(shown, items).sum() / len(items) * 1000.0 / humans)
    return out


def bot_traffic(settings: Settings, config: WorldConfig, day: int, targets: np.ndarray) -> dict:
    """The ring's rows (bots by the world's truth) in the product's curated tables of
    ``day``: how many reached curation (consent applied), how many curation removed
    ("caught"), the ring's saves of its targets that reached the curated training data,
    the ring's members the detector flagged, and human rows removed as a bot's."""
    from flywheel_assets import warehouse
    from flywheel_assets.ingest.pseudonymise import user_key
    from flywheel_assets.simulation import world

    users = pd.read_parquet(world.truth_dir(world.world_dir(settings.data_dir), config, day)
                            / "users.parquet", columns=["user_id", "is_bot"])
    bots = pd.DataFrame({"user_key": [user_key(u, settings.pseudonym_secret)
                                      for u in users.loc[users["is_bot"], "user_id"]]})
    target_ids = pd.DataFrame({"item_id": [f"item_{i:06d}" for i in targets]})
    date = config.date_of(day).isoformat()
    with warehouse.connect(settings.warehouse, read_only=True) as conn:
        conn.register("_bots", bots)
        conn.register("_targets", target_ids)
        # Duplicate copies (removed whatever the settings) are not rows to catch.
        row = conn.execute("""
            WITH removed AS (
                SELECT impression_id, reason FROM curated.feedback_removals
                WHERE partition_date = $d AND stage = 'curated_feedback'),
            events AS (
                SELECT f.user_key, f.grade, r.reason,
                       f.user_key IN (SELECT user_key FROM _bots) AS bot,
                       f.item_id IN (SELECT item_id FROM _targets) AS target
                FROM curated.feedback_events f LEFT JOIN removed r USING (impression_id)
                WHERE f.partition_date = $d
                  AND (r.reason IS NULL OR r.reason NOT LIKE 'duplicate%'))
            SELECT count(*) FILTER (WHERE bot),
                   count(*) FILTER (WHERE bot AND reason IS NOT NULL),
                   count(*) FILTER (WHERE bot AND target AND grade = 3),
                   count(*) FILTER (WHERE bot AND target AND grade = 3 AND reason IS NULL),
                   count(DISTINCT user_key) FILTER (WHERE bot),
                   count(*) FILTER (WHERE NOT bot),
                   count(*) FILTER (WHERE NOT bot AND reason = 'bot or spam user')
            FROM events""", {"d": date}).fetchall()[0]
        flagged = conn.execute("""
            SELECT count(*) FILTER (WHERE user_key IN (SELECT user_key FROM _bots)),
                   count(*) FILTER (WHERE user_key NOT IN (SELECT user_key FROM _bots))
            FROM curated.flagged_users WHERE partition_date = ?""", [date]).fetchall()[0]
        conn.unregister("_bots")
        conn.unregister("_targets")
    reached, caught, saves, saves_kept, active, human_rows, humans_removed = (int(v or 0)
                                                                             for v in row)
    return {"bot_rows": reached, "bot_rows_caught": caught,
            "bot_rows_caught_share": caught / reached if reached else None,
            "bot_target_saves": saves, "bot_target_saves_kept": saves_kept,
            "bots_active": active, "bots_flagged": int(flagged[0] or 0),
            "humans_flagged": int(flagged[1] or 0), "human_rows": human_rows,
            "human_rows_removed_as_bots": humans_removed}


def measure_arm(data_dir: Path, overrides: dict, summary: dict,
                panel_size: int = PANEL_USERS) -> list[dict]:
    """One record per day of a finished arm (its demo ``summary``): the champion in
    service after the day's rotation, where it ranks the targets and the controls,
    the bot traffic and what curation kept of it, the oracle's NDCG@10."""
    from flywheel_assets.simulation import truth, world

    settings = Settings.from_env(data_dir, overrides)
    directory = world.world_dir(settings.data_dir)
    config = world.load_config(directory)
    targets = truth.population(config, 1).bot_targets
    groups = {"targets": np.sort(targets), "controls": matched_controls(config)}
    users = panel(config, panel_size, len(summary["days"]))
    records, previous = [], None
    for day, record in enumerate(summary["days"], 1):
        version = record["champion_version"]
        records.append({
            "day": day, "date": record["date"], "attack": config.active("bot_attack", day),
            "champion_version": version, "champion_changed": version != previous,
            "promoted": record.get("promoted"),
            "oracle_ndcg_at_10": record.get("oracle_ndcg_at_10"),
            "popularity_oracle_ndcg_at_10": record.get("popularity_oracle_ndcg_at_10"),
            "bot_filter_precision": record.get("bot_filter_precision"),
            "bot_filter_recall": record.get("bot_filter_recall"),
            "ranks": champion_ranks(settings, config, day, version, users, groups),
            "served": served_exposure(config, directory, day, groups),
            "bots": bot_traffic(settings, config, day, targets)})
        previous = version
    return records


# --- the report -------------------------------------------------------------------


def headline(records: list[dict], attack: tuple[int, int]) -> dict:
    """Per group: the champion's mean rank and percentile on the day before the attack
    and on its last day, and the move (positive: up the ranking), the percentile on day
    1 (the popularity policy in service, the same in both arms: the ring's standing
    traffic acts before the attack too), the impressions the served slates gave the
    group's items; the targets' moves net of the controls'; the oracle NDCG@10 and the
    bot rows caught over the attack days."""
    first, before, after = records[0], records[attack[0] - 2], records[attack[1] - 1]
    out = {"before_day": before["day"], "after_day": after["day"],
           "before_champion": before["champion_version"],
           "after_champion": after["champion_version"]}
    for group in GROUPS:
        b, a = before["ranks"][group], after["ranks"][group]
        served = f"{group}_impressions_per_item_per_1k_human_requests"
        out[group] = {"rank_before": b["mean_rank"], "rank_after": a["mean_rank"],
                      "rank_rise": b["mean_rank"] - a["mean_rank"],
                      "percentile_before": b["mean_percentile"],
                      "percentile_after": a["mean_percentile"],
                      "percentile_rise": a["mean_percentile"] - b["mean_percentile"],
                      "percentile_day_1": first["ranks"][group]["mean_percentile"],
                      "percentile_rise_since_day_1": (a["mean_percentile"]
                                                      - first["ranks"][group]["mean_percentile"]),
                      "popularity_percentile_before": b["popularity_percentile"],
                      "popularity_percentile_after": a["popularity_percentile"],
                      "served_before": before["served"][served],
                      "served_after": after["served"][served]}
    out["net_percentile_rise"] = (out["targets"]["percentile_rise"]
                                  - out["controls"]["percentile_rise"])
    out["net_percentile_rise_since_day_1"] = (out["targets"]["percentile_rise_since_day_1"]
                                              - out["controls"]["percentile_rise_since_day_1"])
    during = records[attack[0] - 1:attack[1]]
    ndcg = [r["oracle_ndcg_at_10"] for r in during if r["oracle_ndcg_at_10"] is not None]
    out["attack_oracle_ndcg_at_10"] = float(np.mean(ndcg)) if ndcg else None
    reached = sum(r["bots"]["bot_rows"] for r in during)
    out["attack_bot_rows_caught_share"] = (sum(r["bots"]["bot_rows_caught"] for r in during)
                                           / reached if reached else None)
    out["attack_bot_target_saves_kept"] = sum(r["bots"]["bot_target_saves_kept"] for r in during)
    out["attack_human_rows_removed_as_bots"] = sum(r["bots"]["human_rows_removed_as_bots"]
                                                   for r in during)
    return out


def comparison(heads: dict[str, dict]) -> dict:
    """Defences off against on, at the attack's last day: how much higher the targets
    sit, and how much more they rose (net of the controls)."""
    on, off = heads["defences_on"], heads["defences_off"]
    return {"targets_percentile_after_off_minus_on": (off["targets"]["percentile_after"]
                                                      - on["targets"]["percentile_after"]),
            "targets_rank_after_on_minus_off": (on["targets"]["rank_after"]
                                                - off["targets"]["rank_after"]),
            "net_rise_off_minus_on": off["net_percentile_rise"] - on["net_percentile_rise"],
            "net_rise_since_day_1_off_minus_on": (off["net_percentile_rise_since_day_1"]
                                                  - on["net_percentile_rise_since_day_1"])}


def _f(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def day_lines(label: str, records: list[dict]) -> list[str]:
    lines = [f"{LABELS.get(label, label)}:",
             f"{'day':>3} {'att':>3} {'champion':<18} {'NDCG@10':>7} {'bot req':>7} "
             f"{'caught':>6} {'poison kept':>11} {'target rank':>11} {'pct':>5} "
             f"{'control rank':>12} {'pct':>5} {'truth pct T/C':>13} {'pop pct T/C':>11} "
             f"{'served T/C':>11}"]
    for r in records:
        t, c, s, b = r["ranks"]["targets"], r["ranks"]["controls"], r["served"], r["bots"]
        lines.append(
            f"{r['day']:>3} {('yes' if r['attack'] else ''):>3} {r['champion_version']:<18} "
            f"{_f(r['oracle_ndcg_at_10'], 4):>7} {s['bot_request_share']:>7.1%} "
            f"{_f(None if b['bot_rows_caught_share'] is None else 100 * b['bot_rows_caught_share'], 0) + '%':>6} "
            f"{b['bot_target_saves_kept']:>5}/{b['bot_target_saves']:<5} "
            f"{t['mean_rank']:>11.1f} {t['mean_percentile']:>5.1f} "
            f"{c['mean_rank']:>12.1f} {c['mean_percentile']:>5.1f} "
            f"{t['truth_mean_percentile']:>6.1f}/{c['truth_mean_percentile']:<6.1f} "
            f"{t['popularity_percentile']:>5.1f}/{c['popularity_percentile']:<5.1f} "
            f"{s['targets_impressions_per_item_per_1k_human_requests']:>5.1f}/"
            f"{s['controls_impressions_per_item_per_1k_human_requests']:<5.1f}")
    return lines


def headline_lines(heads: dict[str, dict]) -> list[str]:
    labels = list(heads)
    first = heads[labels[0]]
    lines = [f"{'headline (day ' + str(first['before_day']) + ' -> day ' + str(first['after_day']) + ')':<44}"
             + "".join(f"{LABELS.get(k, k):>16}" for k in labels)]

    def row(name: str, values) -> None:
        lines.append(f"{name:<44}" + "".join(f"{v:>16}" for v in values))

    for group in GROUPS:
        h = [heads[k][group] for k in labels]
        row(f"{group}: mean rank before -> after",
            [f"{x['rank_before']:.0f} -> {x['rank_after']:.0f}" for x in h])
        row(f"{group}: rank rise (places)", [f"{x['rank_rise']:+.1f}" for x in h])
        row(f"{group}: percentile before -> after",
            [f"{x['percentile_before']:.1f} -> {x['percentile_after']:.1f}" for x in h])
        row(f"{group}: percentile rise", [f"{x['percentile_rise']:+.1f}" for x in h])
    row("targets' rise net of controls (percentile)",
        [f"{heads[k]['net_percentile_rise']:+.1f}" for k in labels])
    row("  the same since day 1 (popularity served)",
        [f"{heads[k]['net_percentile_rise_since_day_1']:+.1f}" for k in labels])
    for group in GROUPS:
        row(f"{group}: popularity pct before -> after",
            [f"{heads[k][group]['popularity_percentile_before']:.1f} -> "
             f"{heads[k][group]['popularity_percentile_after']:.1f}" for k in labels])
    for group in GROUPS:
        row(f"{group}: served per item per 1k human req",
            [f"{heads[k][group]['served_before']:.1f} -> {heads[k][group]['served_after']:.1f}"
             for k in labels])
    row("bot rows caught (attack days)",
        [_f(None if heads[k]["attack_bot_rows_caught_share"] is None
            else 100 * heads[k]["attack_bot_rows_caught_share"]) + "%" for k in labels])
    row("bot saves of targets kept (attack days)",
        [str(heads[k]["attack_bot_target_saves_kept"]) for k in labels])
    row("human rows removed as bots (attack days)",
        [str(heads[k]["attack_human_rows_removed_as_bots"]) for k in labels])
    row("oracle NDCG@10 (mean over attack days)",
        [_f(heads[k]["attack_oracle_ndcg_at_10"], 4) for k in labels])
    return lines


def run(base: Path, days: int, seed: int, attack: tuple[int, int],
        bot_fraction: float = BOT_FRACTION, panel_size: int = PANEL_USERS, jobs: int = 1,
        measure_only: bool = False, **world) -> dict:
    """Both arms turned and measured; the result (also in ``base/result.json``).
    ``measure_only``: the arms in ``base`` already ran; measure them again (from their
    demo summaries)."""
    from flywheel_assets.harness.benchmarks import run_arms

    arm_specs = arms(base, seed, attack, bot_fraction, **world)
    if measure_only:
        # The run's own attack window and days, whatever the command line says.
        from flywheel_assets.simulation import world as world_lib

        ran = world_lib.load_config(world_lib.world_dir(arm_specs["defences_on"][0].resolve()))
        [window] = [s for s in ran.scenarios if s.name == "bot_attack"]
        if (window.first_day, window.last_day) != tuple(attack):
            raise ValueError(f"the arms in {base} ran with bot_attack on days "
                             f"{window.first_day}-{window.last_day}, not {attack[0]}-{attack[1]}: "
                             f"give --attack {window.first_day}-{window.last_day} and their --days")
        summaries = {label: json.loads((Settings.from_env(d, o).reports_dir
                                        / "demo_summary.json").read_text())
                     for label, (d, o, _) in arm_specs.items()}
    else:
        summaries = run_arms(arm_specs, days, jobs)
    from flywheel_assets.simulation import world as world_lib

    config = world_lib.load_config(world_lib.world_dir(arm_specs["defences_on"][0].resolve()))
    result = {"days": len(summaries["defences_on"]["days"]), "seed": config.seed,
              "attack": list(attack), "bot_fraction": config.bot_fraction,
              "panel_users": panel_size, "defences_off_overrides": DEFENCES_OFF,
              "world": config.to_dict(), "arms": {}}
    for label, (directory, overrides, _) in arm_specs.items():
        records = measure_arm(directory, overrides, summaries[label], panel_size)
        settings = Settings.from_env(directory, overrides)
        result["arms"][label] = {
            "overrides": overrides, "curation_filters": settings.curation.filters,
            "wall_seconds": summaries[label]["wall_seconds"],
            "promotions": summaries[label]["promotions"],
            "headline": headline(records, attack), "by_day": records}
    result["comparison"] = comparison({k: a["headline"] for k, a in result["arms"].items()})
    base.mkdir(parents=True, exist_ok=True)
    (base / "result.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def main(args: argparse.Namespace) -> int:
    days = args.days or 14
    try:
        attack = attack_days(args.attack, days)
    except ValueError as exc:
        raise SystemExit(f"flywheel benchmark poisoning: {exc}")
    world = {name: value for name, value in (
        ("n_users", args.users), ("n_items", args.items),
        ("requests_per_day", args.requests_per_day)) if value is not None}
    base = Settings.from_env(args.data_dir).data_dir / "benchmarks" / "poisoning"
    try:
        result = run(base, days, args.seed, attack, args.bot_fraction, args.panel,
                     getattr(args, "jobs", 1) or 1, args.measure_only, **world)
    except ValueError as exc:
        raise SystemExit(f"flywheel benchmark poisoning: {exc}")
    print()
    print(f"benchmark poisoning: {days} days, seed {args.seed}, bot ring "
          f"{args.bot_fraction:.0%} of users, bot_attack on days {attack[0]}-{attack[1]}, "
          f"{result['world']['n_users']} users, {result['world']['n_items']} items, "
          f"{result['world']['requests_per_day']} requests/day, panel {args.panel} humans; "
          f"results in {base / 'result.json'}")
    print("ranks: the champion in service after the day's rotation, over the whole "
          "catalogue, for the panel (1 = top; pct: share of the catalogue ranked below); "
          "T = the 5 bot targets, C = controls matched on outside popularity; served: "
          "impressions per item per 1000 human requests that day; poison kept: bot saves "
          "of targets in the curated feedback / reaching curation")
    for label, arm in result["arms"].items():
        print()
        for line in day_lines(label, arm["by_day"]):
            print(line)
    print()
    for line in headline_lines({k: a["headline"] for k, a in result["arms"].items()}):
        print(line)
    c, h = result["comparison"], result["arms"]["defences_on"]["headline"]
    print(f"on day {h['after_day']}, the attack's last, the bot targets sit "
          f"{c['targets_rank_after_on_minus_off']:+.0f} places "
          f"({c['targets_percentile_after_off_minus_on']:+.1f} percentile points) higher in "
          f"the champion's rankings with the defences off than on; their rise over the "
          f"attack net of the controls is {c['net_rise_off_minus_on']:+.1f} points larger "
          f"off than on ({c['net_rise_since_day_1_off_minus_on']:+.1f} since day 1)")
    return 0
