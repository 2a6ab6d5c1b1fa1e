"""The loop's own health: concentration of the policy in service."""


def test_concentration_rising_needs_a_rise_at_every_recent_rotation():
    from flywheel_assets.monitor.loop_health import concentration_rising

    def series(*g):
        return [{"exposure_gini": x} for x in g]
    assert concentration_rising(series(0.70, 0.71, 0.72, 0.73), 3)
    assert not concentration_rising(series(0.70, 0.72, 0.71, 0.73), 3)
    assert not concentration_rising(series(0.71, 0.72, 0.73), 3)   # too short to tell
    assert not concentration_rising(series(0.70, 0.701, 0.702, 0.703), 3, min_step=0.005)
