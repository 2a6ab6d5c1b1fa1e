"""The doubly robust estimators' shared reward model: calibrated in examined grades
from position-biased logs, and cross-fitted (a user's outcomes never predict itself)."""

import numpy as np

from flywheel_assets.evaluate import reward_model

R, P, K = 4000, 12, 4


def _day(seed=0):
    rng = np.random.default_rng(seed)
    score = rng.normal(size=(R, P))
    g = 1.5 + np.tanh(score)                        # grade once examined, in 0.5..2.5
    theta = np.array([1.0, 0.6, 0.4, 0.3])
    shown_position = np.full((R, P), np.nan)
    order = np.argsort(-score - rng.normal(0, 1, (R, P)), axis=1)[:, :K]
    np.put_along_axis(shown_position, order, np.arange(1, K + 1)[None, :].repeat(R, 0), axis=1)
    examined = rng.random((R, P)) < theta[np.nan_to_num(shown_position, nan=1).astype(int) - 1]
    grade = np.where(~np.isnan(shown_position) & examined, rng.poisson(g), 0.0)
    return score, g, theta, shown_position, grade


def test_predicts_the_examined_grade_not_the_position_biased_one():
    score, g, theta, shown_position, grade = _day()
    x = reward_model.features({"champion": score}, None, score.shape)
    q, info = reward_model.cross_fitted(x, shown_position, grade, theta, np.arange(R) // 3)
    assert info["kind"] == "cross-fitted"
    shown = ~np.isnan(shown_position)
    # Observed grades average θ·g; the model recovers g itself.
    assert abs(q[shown].mean() - g[shown].mean()) < 0.1 * g[shown].mean()
    assert grade[shown].mean() < 0.75 * g[shown].mean()
    assert np.corrcoef(q[shown], g[shown])[0, 1] > 0.8


def test_a_users_own_outcomes_do_not_enter_its_predictions():
    score, g, theta, shown_position, grade = _day(seed=1)
    users = np.arange(R) // 3
    x = reward_model.features({"champion": score}, None, score.shape)
    q, _ = reward_model.cross_fitted(x, shown_position, grade, theta, users)
    changed = grade.copy()
    mine = users == 5
    changed[mine] = np.where(~np.isnan(shown_position[mine]), 7.0, 0.0)
    q2, _ = reward_model.cross_fitted(x, shown_position, changed, theta, users)
    assert np.array_equal(q[mine], q2[mine])
    assert not np.array_equal(q[~mine], q2[~mine])   # the other fold's model did learn it
