"""The pseudonymisation key: refused when it cannot protect anyone in production,
warned about outside it."""

import pytest

from flywheel_assets.settings import DEV_PSEUDONYM_SECRET, Settings


@pytest.mark.parametrize("secret", [None, DEV_PSEUDONYM_SECRET, "short-key"])
def test_production_refuses_the_development_key_and_a_short_one(monkeypatch, tmp_path, secret):
    monkeypatch.setenv("FLYWHEEL_ENV", "production")
    if secret is None:
        monkeypatch.delenv("FLYWHEEL_PSEUDONYM_SECRET", raising=False)
    else:
        monkeypatch.setenv("FLYWHEEL_PSEUDONYM_SECRET", secret)
    with pytest.raises(ValueError, match="FLYWHEEL_ENV=production"):
        Settings.from_env(str(tmp_path))


def test_production_takes_a_real_secret(monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_ENV", "production")
    monkeypatch.setenv("FLYWHEEL_PSEUDONYM_SECRET", "a-secret-of-thirty-two-characters")
    s = Settings.from_env(str(tmp_path))
    assert not s.uses_development_secret


def test_outside_production_the_development_key_is_allowed_with_a_warning(monkeypatch, tmp_path):
    monkeypatch.delenv("FLYWHEEL_ENV", raising=False)
    monkeypatch.delenv("FLYWHEEL_PSEUDONYM_SECRET", raising=False)
    s = Settings.from_env(str(tmp_path))
    assert s.uses_development_secret and "re-identify" in s.DEVELOPMENT_SECRET_WARNING

