"""The training targets the target benchmark compares."""

import numpy as np
import pandas as pd
import pytest

from flywheel_assets.harness.target_benchmark import labelled


def test_the_ratio_target_fits_observed_over_expected_examination_without_a_clip():
    rows = pd.DataFrame({"label_grade": [3, 0, 0, 2, 0], "examination": [1.0, 0.5, 0.05, 0.05, 0.05]})
    ratio, clipped = labelled(rows, "ratio", clip=10.0), labelled(rows, "clipped", clip=10.0)
    # A leaf holding these rows predicts the weighted mean: Σ grade / Σ θ.
    fit = np.average(ratio["_y"], weights=ratio["_w"])
    assert fit == pytest.approx(5 / 1.65)
    # The clip binds on the rarely examined row (2 / 0.05 = 40 → 20).
    assert clipped["_y"].tolist() == [3, 0, 0, 20, 0] and (clipped["_w"] == 1).all()
    with pytest.raises(ValueError):
        labelled(rows, "other", clip=10.0)
