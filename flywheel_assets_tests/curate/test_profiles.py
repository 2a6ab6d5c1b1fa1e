"""Profiles from feedback: no row reads its own day, de-biased engagement, a
collaborative signal that content cannot give, cold start by segment and by content."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from flywheel_assets import warehouse
from flywheel_assets.curate import profiles
from flywheel_assets.train import features as feats

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
N_USERS, N_ITEMS, SLATE = 40, 30, 10


def _world(rng):
    """Users of two hidden groups, items of two hidden groups orthogonal to their
    category and content: only what users did tells them apart."""
    users = pd.DataFrame({"user_key": [f"u_{u:02d}" for u in range(N_USERS)],
                          "country": ["DE" if u < N_USERS // 2 else "FR" for u in range(N_USERS)],
                          "age_band": "18-24", "consent_training": True})
    items = pd.DataFrame({"item_id": [f"i_{i:02d}" for i in range(N_ITEMS)],
                          "category": ["cat_a" if i < N_ITEMS // 2 else "cat_b" for i in range(N_ITEMS)],
                          **{f"c{j}": rng.normal(size=N_ITEMS) for j in range(6)}})
    return users, items


def _likes(user: int, item: int) -> bool:
    return user % 2 == item % 2


def _feedback(rng, day: str, flip: bool = False) -> pd.DataFrame:
    rows = []
    for u in range(N_USERS):
        shown = rng.choice(N_ITEMS, SLATE, replace=False)
        for position, i in enumerate(shown, start=1):
            examined = rng.random() < 1.0 / position
            grade = 2 * int(examined and (_likes(u, i) != flip))
            rows.append({"partition_date": dt.date.fromisoformat(day),
                         "impression_id": f"{day}-{u}-{position}", "request_id": f"{day}-{u}",
                         "ts": pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=12),
                         "user_key": f"u_{u:02d}", "item_id": f"i_{i:02d}", "position": position,
                         "propensity": 0.1, "n_interactions": int(grade > 0), "grade": grade})
    return pd.DataFrame(rows)


def _insert(conn, table: str, frame: pd.DataFrame) -> None:
    conn.register("_rows", frame)
    conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM _rows")
    conn.unregister("_rows")


@pytest.fixture
def conn(tmp_path):
    rng = np.random.default_rng(0)
    users, items = _world(rng)
    with warehouse.connect(tmp_path / "w.duckdb") as conn:
        for day in DAYS:
            d = dt.date.fromisoformat(day)
            _insert(conn, "raw.users", users.assign(partition_date=d))
            _insert(conn, "raw.items", items.assign(partition_date=d))
            _insert(conn, "curated.position_bias", pd.DataFrame({
                "partition_date": d, "position": np.arange(1, SLATE + 1),
                "examination": 1.0 / np.arange(1, SLATE + 1)}))
            _insert(conn, "curated.curated_feedback", _feedback(rng, day))
        yield conn


def _day_rows(conn, day: str) -> pd.DataFrame:
    """A day's rows as a model scores them: with the user's and the item's attributes."""
    return conn.execute("""
        SELECT f.*, u.country, u.age_band, it.category, it.c0, it.c1, it.c2, it.c3, it.c4, it.c5
        FROM curated.curated_feedback f
        LEFT JOIN raw.users u ON u.user_key = f.user_key AND u.partition_date = f.partition_date
        LEFT JOIN raw.items it ON it.item_id = f.item_id AND it.partition_date = f.partition_date
        WHERE f.partition_date = ? ORDER BY impression_id""", [day]).df()


def test_a_row_never_reads_the_profiles_of_its_own_day(conn):
    for day in DAYS:
        profiles.build_profiles(conn, day, n_factors=4)
    rows = _day_rows(conn, DAYS[2])
    before = feats.attach_profiles(conn, rows)[feats.PROFILE_FEATURES]
    assert before.notna().all().all()
    # The day's own outcomes change, and its profiles are rebuilt from them: the day's
    # rows' features do not move (they read the day before's).
    conn.execute("UPDATE curated.curated_feedback SET grade = 3 - grade WHERE partition_date = ?",
                 [DAYS[2]])
    profiles.build_profiles(conn, DAYS[2], n_factors=4)
    after = feats.attach_profiles(conn, rows)[feats.PROFILE_FEATURES]
    pd.testing.assert_frame_equal(before, after)
    # ... while the day after's would (the check can see a change).
    later = rows.assign(ts=rows["ts"] + pd.Timedelta(days=1))
    moved = feats.attach_profiles(conn, later)[feats.PROFILE_FEATURES]
    assert not np.allclose(moved["p_user_rate"], before["p_user_rate"])
    # The first day has nothing before it: every profile feature is missing.
    first = feats.attach_profiles(conn, _day_rows(conn, DAYS[0]))[feats.PROFILE_FEATURES]
    assert first.isna().all().all()


def test_profiles_of_a_day_do_not_read_later_days(conn):
    profiles.build_profiles(conn, DAYS[1], n_factors=4)
    first = profiles.load_snapshot(conn, dt.date.fromisoformat(DAYS[1]))
    conn.execute("UPDATE curated.curated_feedback SET grade = 3 - grade WHERE partition_date = ?",
                 [DAYS[2]])
    profiles.build_profiles(conn, DAYS[1], n_factors=4)
    again = profiles.load_snapshot(conn, dt.date.fromisoformat(DAYS[1]))
    pd.testing.assert_frame_equal(first.users, again.users)
    pd.testing.assert_frame_equal(first.items, again.items)


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    ranks = pd.Series(scores).rank().to_numpy()
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_collaborative_factors_learn_what_content_and_category_cannot(conn):
    for day in DAYS[:2]:
        profiles.build_profiles(conn, day, n_factors=4)
    rows = feats.attach_profiles(conn, _day_rows(conn, DAYS[2]))
    liked = np.array([_likes(int(u[2:]), int(i[2:])) for u, i in zip(rows["user_key"], rows["item_id"])])
    assert _auc(rows["p_factor_score"].to_numpy(), liked) > 0.8
    # The hidden groups are orthogonal to category and content: those features cannot.
    assert abs(_auc(rows["p_category_affinity"].to_numpy(), liked) - 0.5) < 0.15
    assert abs(_auc(rows["p_content_match"].to_numpy(), liked) - 0.5) < 0.15


def test_engagement_is_debiased_by_examination(conn):
    """Two items engaged with equally when examined: the one shown deep (rarely looked
    at) has fewer raw engagements but the same de-biased rate."""
    day = dt.date.fromisoformat(DAYS[0])
    conn.execute("DELETE FROM curated.curated_feedback")
    conn.execute("DELETE FROM raw.users")  # users nobody snapshotted: consent not logged
    rows = []
    for u in range(200):
        for item, position in (("i_top", 1), ("i_deep", 10)):
            looked = (u % position) == 0  # examined 1/position of the time
            rows.append({"partition_date": day, "impression_id": f"{u}-{item}",
                         "request_id": str(u), "ts": pd.Timestamp(day, tz="UTC"),
                         "user_key": f"u_{u:03d}", "item_id": item, "position": position,
                         "propensity": 1.0, "n_interactions": int(looked), "grade": 2 * int(looked)})
    _insert(conn, "curated.curated_feedback", pd.DataFrame(rows))
    profiles.build_profiles(conn, DAYS[0], n_factors=2, prior=1.0)
    items = profiles.load_snapshot(conn, day).items
    assert items.loc["i_top", "rate"] == pytest.approx(2.0, rel=0.05)
    assert items.loc["i_deep", "rate"] == pytest.approx(2.0, rel=0.1)


def test_cold_start_falls_back_to_segment_and_content(conn):
    for day in DAYS[:2]:
        profiles.build_profiles(conn, day, n_factors=4)
    rows = _day_rows(conn, DAYS[2]).head(4).copy()
    rows["user_key"] = "u_new"              # a user the profiles never saw
    rows.loc[rows.index[0], "item_id"] = "i_new"  # an item nobody was shown
    out = feats.attach_profiles(conn, rows)
    snapshot = profiles.load_snapshot(conn, dt.date.fromisoformat(DAYS[1]))
    assert (out["p_user_known"] == 0).all()
    # The new user reads their segment's rate, not a constant.
    segment = profiles.segment_of(rows["country"].iloc[0], rows["age_band"].iloc[0])
    assert out["p_user_rate"].iloc[0] == pytest.approx(snapshot.segments.loc[segment, "rate"])
    assert out["p_item_known"].iloc[0] == 0 and out["p_item_known"].iloc[1:].eq(1).all()
    # The new item's factors come from its content: another content, another score.
    other = rows.head(1).assign(c0=rows["c0"].iloc[0] + 3.0)
    shifted = feats.attach_profiles(conn, other)
    assert shifted["p_factor_score"].iloc[0] != pytest.approx(out["p_factor_score"].iloc[0])
    assert np.isfinite(out[feats.PROFILE_FEATURES].to_numpy()).all()


def test_anonymous_rows_and_products_without_snapshots_still_get_item_features(conn):
    conn.execute("DELETE FROM raw.users")
    conn.execute("DELETE FROM raw.items")
    conn.execute("UPDATE curated.curated_feedback SET user_key = NULL")
    for day in DAYS[:2]:
        profiles.build_profiles(conn, day, n_factors=4)
    rows = conn.execute("SELECT * FROM curated.curated_feedback WHERE partition_date = ?",
                        [DAYS[2]]).df().assign(user_key=None)
    out = feats.attach_profiles(conn, rows)
    assert (out["p_user_known"] == 0).all()
    assert out["p_item_rate"].notna().all() and out["p_item_known"].eq(1).any()
    # Items still differ: the item rates carry what anonymous traffic did.
    assert out["p_item_rate"].nunique() > 5


def test_erasure_reaches_the_profiles(conn):
    from flywheel_assets.ingest import erasure

    profiles.build_profiles(conn, DAYS[0], n_factors=4)
    conn.execute("INSERT INTO raw.deletion_requests (user_key) VALUES ('u_03')")
    erasure.erase_deleted_users(conn)
    for table in ("curated.user_profiles", "curated.user_category_affinity"):
        assert conn.execute(f"SELECT count(*) FROM {table} WHERE user_key = 'u_03'").fetchone()[0] == 0
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0


def test_any_index_gets_the_features_of_its_own_row(conn):
    for day in DAYS[:2]:
        profiles.build_profiles(conn, day, n_factors=4)
    rows = pd.concat([_day_rows(conn, DAYS[2]).head(6), _day_rows(conn, DAYS[1]).head(6)])
    expected = feats.attach_profiles(conn, rows.reset_index(drop=True))
    shuffled = rows.sample(frac=1.0, random_state=1)
    shuffled.index = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]  # not unique, days interleaved
    out = feats.attach_profiles(conn, shuffled)
    assert list(out.index) == list(shuffled.index)
    again = out.reset_index(drop=True).set_index("impression_id").loc[
        expected["impression_id"], feats.PROFILE_FEATURES]
    assert np.allclose(again.to_numpy(), expected[feats.PROFILE_FEATURES].to_numpy(),
                       equal_nan=True)


def test_an_empty_window_writes_no_profile_and_old_ones_expire(conn):
    profiles.build_profiles(conn, DAYS[0], n_factors=4)
    conn.execute("DELETE FROM curated.curated_feedback")
    stats = profiles.build_profiles(conn, DAYS[1], n_factors=4)
    assert stats["rows"] == 0
    assert conn.execute("SELECT count(*) FROM curated.item_profiles WHERE partition_date = ?",
                        [DAYS[1]]).fetchone()[0] == 0
    # Day 3's rows read day 1's profiles (day 2 has none) ...
    assert profiles.available_day(conn, dt.date.fromisoformat(DAYS[2])) == \
        dt.date.fromisoformat(DAYS[0])
    # ... and a row long after reads none.
    late = dt.date.fromisoformat(DAYS[0]) + dt.timedelta(days=profiles.MAX_AGE_DAYS + 1)
    assert profiles.available_day(conn, late) is None


def test_streamed_pairs_and_the_dense_user_category_grid_change_no_profile(conn, monkeypatch):
    """The pairs streamed in batches of 7 rows and the user × category sums taken by
    np.unique (the path for grids too large to be dense) give the same profiles, value
    for value, as one batch and the dense grid (one DuckDB thread: its sums in one order)."""
    conn.execute("SET threads = 1")

    def exact(value):
        if isinstance(value, (list, np.ndarray)):
            return tuple(float(v) for v in value)
        return None if value is None or (isinstance(value, float) and np.isnan(value)) else value

    def frames():
        built = profiles.compute_profiles(conn, DAYS[1], n_factors=4)
        return built.stats["pairs"], [
            getattr(built, n).reset_index(drop=True).map(exact)
            for n in ("users", "categories", "items", "segments")]

    pairs, dense = frames()
    users, categories = len(dense[0]), dense[2]["category"].nunique()
    assert users * categories <= 4 * pairs  # the first call took the dense grid
    monkeypatch.setattr(profiles, "PAIR_BATCH", 7)
    monkeypatch.setattr(profiles, "DENSE_USER_CATEGORY_CELLS", 0)
    _, other = frames()
    for ours, theirs in zip(dense, other):
        pd.testing.assert_frame_equal(ours, theirs, check_exact=True)
    assert pairs > 7  # the batches really split them
