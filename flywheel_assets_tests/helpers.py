"""Small builders shared by tests."""

import numpy as np
import pandas as pd


def tiny_training_rows(seed: int = 0, n: int = 400) -> pd.DataFrame:
    """Raw training rows with every column the model's features derive from."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "ts": pd.Timestamp("2026-01-01", tz="UTC"), "device": rng.choice(["mobile", "tv"], n),
        "country": rng.choice(["DE", "FR"], n), "age_band": "18-24",
        "signup_date": pd.Timestamp("2025-01-01"), "category": rng.choice(["cat_01", "cat_02"], n),
        "published_date": pd.Timestamp("2025-06-01"), "duration_s": 100.0,
        "popularity": rng.integers(0, 100, n), **{f"c{i}": rng.normal(size=n) for i in range(6)},
        "label_grade": rng.integers(0, 4, n), "weight": 1.0})
