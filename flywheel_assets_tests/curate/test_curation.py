"""Curation filters on a real DuckDB file: every removal has a reason, rows are
accounted for, planted bad signals go, planted label noise is found."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from flywheel_assets import warehouse
from flywheel_assets.curate import feedback as curate
from flywheel_assets.curate.filters import FilterRules
from flywheel_assets.curate.label_noise import flag_label_issues

DAY = "2026-01-05"


def _row(i, user="u_human", signals=(), **fields):
    base = dict(partition_date=dt.date(2026, 1, 5), impression_id=f"i{i}", request_id=f"r{i}",
                # A person: requests at irregular times of the day.
                ts=pd.Timestamp("2026-01-05 00:00", tz="UTC")
                + pd.Timedelta(seconds=float(np.random.default_rng(i).uniform(0, 86_000))),
                user_key=user, item_id=f"item{i % 7}", position=1 + i % 10, propensity=0.9,
                policy_version="p", device="mobile", n_interactions=1,
                max_value=0.5, first_interaction_ts=None, signals=list(signals) or None)
    base.update(fields)
    base["first_interaction_ts"] = base["ts"] + pd.Timedelta(seconds=base.pop("reaction", 30))
    return base


@pytest.fixture
def conn(tmp_path):
    with warehouse.connect(tmp_path / "w.duckdb") as c:
        yield c


def _load(conn, rows):
    conn.register("_rows", pd.DataFrame(rows))
    conn.execute("INSERT INTO curated.feedback_events BY NAME SELECT * FROM _rows")
    conn.unregister("_rows")


def test_planted_bad_signals_are_removed_with_reasons(conn):
    rows = [_row(i, signals=["complete"]) for i in range(40)]
    rows.append(_row(100, signals=["complete", "thumbs_down"]))              # contradictory
    rows.append(_row(101, signals=["partial"], max_value=0.01))                    # no information
    original = _row(102, signals=["save"])
    rows += [original, dict(original, impression_id="i102-dup")]                # double-logged
    bot_start = pd.Timestamp("2026-01-05 00:00", tz="UTC")
    for j in range(12):  # a machine: every 2 hours on the dot, reacting in half a second
        r = _row(200 + j, user="u_bot", signals=["save"], reaction=0.5)
        r["ts"] = bot_start + pd.Timedelta(hours=2 * j)
        r["first_interaction_ts"] = r["ts"] + pd.Timedelta(seconds=0.5)
        rows.append(r)
    _load(conn, rows)
    stats = curate.build_curated_feedback(conn, DAY, use_filters=True, max_label_issue_share=0)
    removed = dict(conn.execute("SELECT impression_id, reason FROM curated.feedback_removals").fetchall())
    assert removed["i100"].startswith("contradictory")
    assert removed["i101"].startswith("low information")
    assert removed["i102-dup"].startswith("duplicate")
    assert all(removed[f"i{200 + j}"] == "bot or spam user" for j in range(12))
    flagged = conn.execute("SELECT user_key, reasons FROM curated.flagged_users").fetchall()
    assert [u for u, _ in flagged] == ["u_bot"]
    assert "regular request intervals" in flagged[0][1] and "faster than a person" in flagged[0][1]
    kept = conn.execute("SELECT count(*) FROM curated.curated_feedback").fetchone()[0]
    assert kept + len(removed) == len(rows) == stats["input_rows"]
    assert kept == 40 + 1  # the 40 human rows and the original of the double-logged one


def test_filters_off_means_dedupe_only(conn):
    rows = [_row(i, signals=["complete"]) for i in range(10)]
    rows.append(_row(100, signals=["complete", "thumbs_down"]))
    _load(conn, rows)
    stats = curate.build_curated_feedback(conn, DAY, use_filters=False)
    assert stats["rows"] == 11 and stats["filters"].startswith("off")


def test_per_user_cap(conn):
    _load(conn, [_row(i, user="u_heavy", signals=["partial"], max_value=0.4) for i in range(30)])
    curate.build_curated_feedback(conn, DAY, rules=FilterRules(per_user_cap=25),
                                  max_label_issue_share=0)
    reasons = conn.execute("SELECT reason, count(*) FROM curated.feedback_removals GROUP BY 1").fetchall()
    assert reasons == [("per-user cap (25 impressions a day)", 5)]


def test_anonymous_traffic_is_neither_a_bot_nor_capped(conn):
    """Rows without a user id are not one giant user: no user-level filter applies."""
    rows = [_row(i, user=None, signals=["click"]) for i in range(60)]
    _load(conn, rows)
    stats = curate.build_curated_feedback(conn, DAY, rules=FilterRules(per_user_cap=25,
                                                                      max_requests_per_day=10),
                                          max_label_issue_share=0)
    assert stats["rows"] == 60 and stats["flagged_users"] == 0


def test_confident_learning_finds_planted_label_flips():
    rng = np.random.default_rng(0)
    n = 4000
    c0 = rng.normal(size=n)
    grade = np.digitize(c0, [-0.7, 0.0, 0.7])  # the grade is a function of c0
    flipped = rng.choice(n, 60, replace=False)
    noisy = grade.copy()
    noisy[flipped] = 3 - grade[flipped]
    frame = pd.DataFrame({
        "impression_id": [f"i{i}" for i in range(n)], "label_grade": noisy, "position": 1,
        "ts": pd.Timestamp("2026-01-05", tz="UTC"), "device": "mobile", "country": "DE",
        "age_band": "18-24", "signup_date": pd.Timestamp("2025-01-01"), "category": "a",
        "published_date": pd.Timestamp("2025-06-01"), "duration_s": 100.0, "popularity": 10,
        "c0": c0, **{f"c{i}": rng.normal(size=n) for i in range(1, 6)}})
    found = flag_label_issues(frame, max_share=0.02)
    assert 0 < len(found) <= 80
    truly_flipped = {f"i{i}" for i in flipped if grade[i] != noisy[i]}
    precision = len(set(found) & truly_flipped) / len(found)
    assert precision > 0.7, precision


def _impressions(conn, users):
    for i, user in enumerate(users):
        conn.execute("INSERT INTO raw.impressions (partition_date, impression_id, request_id, ts, "
                     "user_key, item_id, position, propensity) VALUES (?, ?, ?, ?, ?, 'x', 1, 0.5)",
                     [DAY, f"i{i}", f"r{i}", pd.Timestamp(f"{DAY} 10:00", tz="UTC"), user])


def _kept(conn):
    return sorted(r[0] or "anonymous" for r in conn.execute(
        "SELECT user_key FROM curated.feedback_events").fetchall())


def test_consent_is_enforced_once_logged_and_fails_closed(conn):
    _impressions(conn, ["u_yes", "u_no", None])
    # A product that never logs consent collects it upstream: every row is learnt from.
    curate.build_feedback_events(conn, DAY)
    assert _kept(conn) == ["anonymous", "u_no", "u_yes"]
    conn.execute("INSERT INTO raw.users (partition_date, user_key, consent_training) VALUES "
                 "('2026-01-04', 'u_yes', TRUE), ('2026-01-04', 'u_no', FALSE)")
    curate.build_feedback_events(conn, DAY)
    assert _kept(conn) == ["u_yes"]  # a "no" and anonymous rows are out once consent is logged
    # A later snapshot that lost the flag must not open the door again.
    conn.execute("INSERT INTO raw.users (partition_date, user_key) VALUES "
                 "('2026-01-05', 'u_yes'), ('2026-01-05', 'u_no')")
    stats = curate.build_feedback_events(conn, DAY)
    assert _kept(conn) == [] and stats["excluded_no_consent"] == 3
    curate.build_feedback_events(conn, DAY, consent="not_logged")
    assert _kept(conn) == ["anonymous", "u_no", "u_yes"]
