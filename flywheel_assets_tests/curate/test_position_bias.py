"""The position-bias estimator recovers a known examination curve from explored
slates, and is not fooled by greedy slates whose order follows relevance."""

import numpy as np
import pandas as pd

from flywheel_assets.curate import position_bias as pb


def _logs(theta: np.ndarray, n_explored: int, n_greedy: int, seed: int = 0):
    """All logged rows, and the rows of explored requests as the estimator selects them."""
    rng = np.random.default_rng(seed)
    k = len(theta)
    rows = []
    for kind, n, propensity in (("e", n_explored, 0.002), ("g", n_greedy, 0.9)):
        relevance = rng.uniform(0.1, 0.9, (n, k))
        if kind == "g":  # a greedy policy puts the most relevant items first
            relevance = -np.sort(-relevance, axis=1)
        clicked = rng.random((n, k)) < theta[None, :] * relevance
        for r in range(n):
            for p in range(k):
                rows.append((f"{kind}{r}", p + 1, propensity, int(clicked[r, p])))
    frame = pd.DataFrame(rows, columns=["request_id", "position", "propensity", "clicked"])
    explored = frame["request_id"].str.startswith("e")  # the product declared these random
    return frame, frame[explored][["request_id", "position", "clicked"]]


def test_recovers_a_known_curve_within_its_interval():
    theta = np.arange(1, 11) ** -0.7
    _, explored = _logs(theta, n_explored=20_000, n_greedy=5_000)
    curve = pb.estimate(explored, slate_size=10)
    rel_error = np.abs(curve["examination"].to_numpy() - theta) / theta
    assert rel_error.max() < 0.08, rel_error
    inside = (curve["ci_low"] <= theta) & (theta <= curve["ci_high"])
    assert inside.mean() >= 0.8  # a 95% interval covers the truth at most positions
    assert (curve["ci_high"] - curve["ci_low"]).iloc[1:].gt(0).all()


def test_greedy_slates_do_not_fool_it():
    """No position bias at all, but greedy slates put relevant items first: click rates
    over all traffic fall with position; the estimator, on explored slates, stays flat."""
    everything, explored = _logs(np.ones(10), n_explored=10_000, n_greedy=10_000)
    naive = everything.groupby("position")["clicked"].mean()
    assert naive[10] / naive[1] < 0.75
    curve = pb.estimate(explored, slate_size=10)
    assert np.abs(curve["examination"] - 1.0).max() < 0.06


def test_no_explored_traffic_is_not_identified_and_says_why():
    curve = pb.estimate(pd.DataFrame(columns=["request_id", "position", "clicked"]), slate_size=5)
    assert curve["examination"].isna().all() and not pb.identified(curve)
    assert curve["method"].iloc[0].startswith("not identified: 0 explored requests")
    assert "without IPS" in pb.curve_markdown(curve)


def test_a_non_contextual_logger_identifies_the_curve_by_harvesting():
    """Thompson sampling over items puts the same item at different positions at random:
    the item × position click rates give θ without any random slate."""
    rng = np.random.default_rng(3)
    theta, ctr = np.array([1.0, 0.6, 0.35]), rng.uniform(0.05, 0.4, 30)
    # Like Thompson sampling: rank by a noisy draw of each item's rate, so better items
    # are at the top more often, but every item lands at every position sometimes.
    rows = []
    for _ in range(20_000):
        items = np.argsort(-(ctr + rng.normal(0, 0.1, 30)))[:3]
        for k, item in enumerate(items):
            rows.append((f"i{item}", k + 1, rng.random() < theta[k] * ctr[item]))
    frame = pd.DataFrame(rows, columns=["item_id", "position", "clicked"])
    counts = frame.groupby(["item_id", "position"]).agg(shown=("clicked", "size"),
                                                        clicks=("clicked", "sum")).reset_index()
    curve = pb.harvest(counts, slate_size=3)
    assert pb.identified(curve)
    assert np.abs(curve["examination"].to_numpy() - theta).max() < 0.05
    assert ((curve["ci_low"] <= theta) & (theta <= curve["ci_high"])).all()
    # The naive click rate by position mixes position with which items land there.
    naive = frame.groupby("position")["clicked"].mean().to_numpy()
    harvested = curve["examination"].to_numpy()
    assert abs(naive[2] / naive[0] - theta[2]) > abs(harvested[2] - theta[2])
