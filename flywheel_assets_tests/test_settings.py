"""Settings: one scheme for the environment, one mapping for experiments, typed values,
unknown names refused; the resource and the definitions take the same mapping."""

import dataclasses

import pytest

from flywheel_assets.definitions import build_definitions
from flywheel_assets.settings import GROUPS, Settings, encode, env_name, knob_names


def test_every_knob_reads_its_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_GATE_MIN_EFFECT", "0.25")
    monkeypatch.setenv("FLYWHEEL_CURATION_FILTERS", "off")
    monkeypatch.setenv("FLYWHEEL_INGEST_REQUIRED_STREAMS", "impressions, interactions, items")
    monkeypatch.setenv("FLYWHEEL_START_DATE", "2026-03-01")
    monkeypatch.setenv("FLYWHEEL_ALERT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    s = Settings.from_env(tmp_path)
    assert s.gate.min_effect == 0.25 and s.curation.filters is False
    assert s.ingest.required_streams == ("impressions", "interactions", "items")
    assert s.start_date.isoformat() == "2026-03-01"
    assert s.alert.webhook_url == "http://127.0.0.1:9/hook"
    assert env_name("curation_rules.per_user_cap") == "FLYWHEEL_CURATION_RULES_PER_USER_CAP"


def test_the_older_switch_names_still_work_and_the_new_ones_win(monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_IPS", "0")
    assert Settings.from_env(tmp_path).training.ips is False
    monkeypatch.setenv("FLYWHEEL_TRAINING_IPS", "1")
    assert Settings.from_env(tmp_path).training.ips is True


def test_overrides_win_over_the_environment_and_unknown_names_are_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_SERVING_DIVERSITY", "0.5")
    s = Settings.from_env(tmp_path, {"serving.diversity": 0.0, "drift.sample_rows": "100"})
    assert s.serving.diversity == 0.0 and s.drift.sample_rows == 100
    with pytest.raises(ValueError, match="unknown setting 'gate.min_efect'"):
        Settings.from_env(tmp_path, {"gate.min_efect": 0.1})
    with pytest.raises(ValueError, match="FLYWHEEL_TRAINING_WINDOW_DAYS"):
        Settings.from_env(tmp_path, {"training.window_days": "a week"})
    # A knob an earlier version had is warned about, not refused.
    monkeypatch.setenv("FLYWHEEL_TRAINING_IPS_CLIP", "10")
    with pytest.warns(UserWarning, match="training.ips_clip"):
        assert Settings.from_env(tmp_path).training.ips


def test_knobs_round_trip_through_their_string_form(tmp_path):
    s = Settings.from_env(tmp_path, {"alert.webhook_url": "http://127.0.0.1:9/x",
                                     "curation.filters": False, "gate.confidence": 0.9})
    again = Settings.from_env(tmp_path, encode(s.knobs()))
    assert again == s
    # Every field of every group is a knob, and every knob has one variable.
    fields = {f"{g}.{f.name}" for g, cls in GROUPS.items() for f in dataclasses.fields(cls)}
    assert fields <= set(knob_names())
    assert len({env_name(k) for k in knob_names()}) == len(knob_names())


def test_the_definitions_resource_carries_the_overrides(tmp_path):
    defs = build_definitions(str(tmp_path), {"curation.filters": False, "gate.min_effect": 0.3})
    resource = defs.resources["flywheel"]
    assert resource.settings.curation.filters is False
    assert resource.settings.gate.min_effect == 0.3
    assert resource.settings.data_dir == tmp_path.resolve()


def test_the_older_switches_keep_their_rule_and_an_empty_secret_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("FLYWHEEL_FILTERS", "OFF")
    assert Settings.from_env(tmp_path).curation.filters is False
    monkeypatch.setenv("FLYWHEEL_FILTERS", "n")  # anything but 0/false/off/no is on
    monkeypatch.setenv("FLYWHEEL_IPS", "no")
    s = Settings.from_env(tmp_path)
    assert s.curation.filters is True and s.training.ips is False
    monkeypatch.setenv("FLYWHEEL_PSEUDONYM_SECRET", " s3cret ")  # a secret is taken verbatim
    assert Settings.from_env(tmp_path).pseudonym_secret == " s3cret "
    for empty in ("", "   "):
        monkeypatch.setenv("FLYWHEEL_PSEUDONYM_SECRET", empty)
        with pytest.raises(ValueError, match="FLYWHEEL_PSEUDONYM_SECRET is set but empty"):
            Settings.from_env(tmp_path)
