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


GOOD_URL = "postgresql+psycopg2://flywheel:secret@db.internal:5432/dagster"


def test_a_new_dagster_home_gets_the_instance_the_environment_chooses(monkeypatch, tmp_path):
    from dagster._core.instance.config import dagster_instance_config

    from flywheel_assets.settings import ensure_instance_config, instance_kind

    monkeypatch.delenv("FLYWHEEL_DAGSTER_INSTANCE", raising=False)
    embedded = ensure_instance_config(tmp_path / "embedded") / "dagster.yaml"
    assert instance_kind(embedded) == "embedded"
    monkeypatch.setenv("FLYWHEEL_DAGSTER_INSTANCE", "postgres")
    monkeypatch.setenv("FLYWHEEL_POSTGRES_URL", GOOD_URL)
    home = ensure_instance_config(tmp_path / "pg")
    assert instance_kind(home / "dagster.yaml") == "postgres"
    # Dagster's own schema takes it, and it reads the server from the environment.
    config, _ = dagster_instance_config(str(home))
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "FLYWHEEL_POSTGRES_URL"}
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert GOOD_URL not in (home / "dagster.yaml").read_text()
    # A home that has its config keeps it, the same kind asked again or nothing asked.
    assert ensure_instance_config(home) == home
    monkeypatch.delenv("FLYWHEEL_DAGSTER_INSTANCE")
    ensure_instance_config(embedded.parent)
    assert instance_kind(embedded) == "embedded"


def test_an_instance_that_cannot_work_is_refused_before_dagster_loads_it(monkeypatch, tmp_path):
    from flywheel_assets.settings import ensure_instance_config

    monkeypatch.setenv("FLYWHEEL_DAGSTER_INSTANCE", "postgress")
    with pytest.raises(ValueError, match="FLYWHEEL_DAGSTER_INSTANCE='postgress'.*embedded"):
        ensure_instance_config(tmp_path / "typo")
    monkeypatch.setenv("FLYWHEEL_DAGSTER_INSTANCE", "postgres")
    monkeypatch.delenv("FLYWHEEL_POSTGRES_URL", raising=False)
    with pytest.raises(ValueError, match="needs FLYWHEEL_POSTGRES_URL"):
        ensure_instance_config(tmp_path / "no-url")
    # SQLAlchemy 2.1 would open it with psycopg 3, under which Dagster's event log fails.
    monkeypatch.setenv("FLYWHEEL_POSTGRES_URL", "postgresql://flywheel:secret@db:5432/dagster")
    with pytest.raises(ValueError, match="postgresql\\+psycopg2://.*not 'postgresql'"):
        ensure_instance_config(tmp_path / "bare-url")
    assert not any((tmp_path / name / "dagster.yaml").exists()
                   for name in ("typo", "no-url", "bare-url"))
    # An embedded home asked to be a Postgres one is refused, not silently kept.
    monkeypatch.delenv("FLYWHEEL_DAGSTER_INSTANCE")
    home = ensure_instance_config(tmp_path / "home")
    monkeypatch.setenv("FLYWHEEL_DAGSTER_INSTANCE", "postgres")
    monkeypatch.setenv("FLYWHEEL_POSTGRES_URL", GOOD_URL)
    with pytest.raises(ValueError, match="is an embedded instance but "
                                         "FLYWHEEL_DAGSTER_INSTANCE=postgres"):
        ensure_instance_config(home)
