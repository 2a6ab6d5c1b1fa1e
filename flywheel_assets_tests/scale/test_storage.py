"""Storage by URI: the landing zone, the models and the reports in a folder named by a
file:// URI or in an S3 bucket (moto's server on 127.0.0.1: an in-memory stand-in that
speaks S3's HTTP API, not AWS, not MinIO). A `Location` behaves the same on both; the
wheel turned with all three in the bucket writes the tables the wheel with local folders
writes, and a machine with an empty data dir serves the champion from the bucket."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import dagster as dg
import pytest

from flywheel_assets import storage, warehouse
from flywheel_assets.cli import main
from flywheel_assets.settings import Settings
from flywheel_assets.train import model_store
from flywheel_assets_tests.helpers import land_day, turn_the_wheel
from flywheel_assets_tests.test_rotation_small_world import CONFIG

WORLD = replace(CONFIG, n_users=250, n_items=200, requests_per_day=800)
DAYS = ["2026-01-01", "2026-01-02"]


def _keys(s3, prefix: str) -> list[str]:
    return [o["Key"] for page in s3["client"].get_paginator("list_objects_v2")
            .paginate(Bucket=s3["bucket"], Prefix=prefix) for o in page.get("Contents", [])]


@pytest.fixture(params=["file", "s3"])
def location(request, tmp_path, monkeypatch):
    """One location of each kind, with its own working copy."""
    if request.param == "file":
        return storage.Location(f"file://{tmp_path / 'shared'}", tmp_path / "cache")
    return _in_the_bucket(request.getfixturevalue("s3_server"), tmp_path, monkeypatch)


@pytest.fixture
def bucket_location(s3_server, tmp_path, monkeypatch):
    return _in_the_bucket(s3_server, tmp_path, monkeypatch)


def _in_the_bucket(s3_server, tmp_path, monkeypatch):
    for name, value in s3_server["env"].items():
        monkeypatch.setenv(name, value)
    options = storage.S3Options.from_env(s3_server["env"]["FLYWHEEL_S3_ENDPOINT"], use_ssl=False)
    return storage.Location(f"s3://flywheel/{tmp_path.name}/area", tmp_path / "cache", options)


def test_a_location_reads_what_it_wrote_on_either_kind(location):
    assert not location.exists("a/b.json") and location.list() == []
    with pytest.raises(FileNotFoundError, match="b.json"):
        location.read_bytes("a/b.json")
    location.write_bytes("a/b.json", b'{"v": 1}')
    location.write_bytes("a/b.json", b'{"v": 2}')  # replaced, not appended
    assert location.read_text("a/b.json") == '{"v": 2}'
    assert location.exists("a/b.json") and location.is_dir("a") and not location.is_dir("a/b.json")
    assert location.list() == ["a"] and location.list("a") == ["b.json"]
    assert location.mtime("a/b.json") > 0
    location.remove("a/b.json")
    location.remove("a/b.json")  # absent: nothing to do
    assert not location.exists("a/b.json")


def test_a_working_copy_goes_up_marker_last_and_comes_back_when_it_changed(location):
    day = location.cache / "impressions" / "date=2026-01-01"
    day.mkdir(parents=True)
    for name in ("part-1.jsonl", "_SUCCESS", "part-0.jsonl"):
        (day / name).write_text(name)
    (day / ".part-2.jsonl.tmp").write_text("half-written")  # never published
    order = []
    if location.remote:
        location._fs = _Watching(location._fs, copies=order)
    location.publish("impressions/date=2026-01-01", last=("_SUCCESS",))
    if location.remote:
        # Each object is staged under .uploads/ and copied into place, in this order.
        assert [k.rsplit("/", 1)[1] for k in order] == ["part-0.jsonl", "part-1.jsonl", "_SUCCESS"]
        assert sorted(location.list("impressions/date=2026-01-01")) == [
            "_SUCCESS", "part-0.jsonl", "part-1.jsonl"]
        # What this machine uploaded is current: reading it back downloads nothing.
        downloads = []
        real_download = location._download
        location._download = lambda key, target: (downloads.append(key),
                                                   real_download(key, target))
        assert location.local_copy("impressions/date=2026-01-01/part-0.jsonl").read_text() \
            == "part-0.jsonl" and downloads == []
        # A working copy that is not the object's (same size, another time: another
        # machine's file, or one changed by hand) is replaced by the object.
        mine = day / "part-1.jsonl"
        mine.write_text("PART-1.JSONL")
        assert location.local_copy("impressions/date=2026-01-01/part-1.jsonl").read_text() \
            == "part-1.jsonl" and len(downloads) == 1
        # A re-landed day replaces the folder: a file it no longer has is gone.
        (day / "part-1.jsonl").unlink()
        location.publish("impressions/date=2026-01-01", last=("_SUCCESS",), replace=True)
        assert location.list("impressions/date=2026-01-01") == ["_SUCCESS", "part-0.jsonl"]
    else:
        # A file:// location is its own working copy: nothing to upload or download.
        assert location.local_copy("impressions/date=2026-01-01/_SUCCESS") == day / "_SUCCESS"
        assert not (location.cache.parent / "cache").exists()


class _Watching:
    """pyarrow's S3 filesystem, noting the keys it copies objects into (``copies``) and
    each request for file information (``infos``)."""

    def __init__(self, fs, copies=None, infos=None):
        self._fs, self._copies, self._infos = fs, copies, infos

    def copy_file(self, source, key):
        if self._copies is not None:
            self._copies.append(key)
        return self._fs.copy_file(source, key)

    def get_file_info(self, what):
        if self._infos is not None:
            self._infos.append(what)
        return self._fs.get_file_info(what)

    def __getattr__(self, name):
        return getattr(self._fs, name)


def test_the_sensor_reads_every_days_marker_time_in_one_listing(location):
    for day in ("2026-01-01", "2026-01-02"):
        location.write_bytes(f"impressions/date={day}/part-0.jsonl", b"{}")
    location.write_bytes("impressions/date=2026-01-02/_SUCCESS", b"")
    location.write_bytes("impressions/date=2026-01-02/nested/_SUCCESS", b"")  # not a day's
    requests = []
    if location.remote:  # one listing, however many days: count what is asked of the store
        real = location._fs
        location._fs = _Watching(real, infos=requests)
    stamps = location.stamps("impressions", "_SUCCESS")
    if location.remote:
        location._fs = real
        assert len(requests) == 1, requests
    assert list(stamps) == ["date=2026-01-02"]
    assert stamps["date=2026-01-02"] == location.mtime("impressions/date=2026-01-02/_SUCCESS")
    assert location.stamps("clicks", "_SUCCESS") == {}


def test_an_upload_cut_short_leaves_no_object_under_its_name(bucket_location, s3_server,
                                                              monkeypatch):
    location = bucket_location
    location.write_bytes("v1/card.json", b"old")
    source = location.cache / "v1" / "card.json"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(b"x" * (3 << 20))

    class Interrupted(Exception):
        pass

    class Cut:
        """The working copy's file, read for one megabyte; then the upload is stopped."""

        def __init__(self, path, mode):
            self.handle, self.reads = open(path, mode), 0

        def read(self, n=-1):
            self.reads += 1
            if self.reads > 1:
                raise Interrupted("stopped mid-upload")
            return self.handle.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(storage, "open", Cut, raising=False)  # storage's open only
    with pytest.raises(Interrupted):
        location.publish("v1/card.json")
    monkeypatch.undo()
    assert location.read_bytes("v1/card.json") == b"old"  # the old object, whole
    prefix = location._key("").split("/", 1)[1]
    # The staged upload is gone (pyarrow leaves an empty `.uploads/` folder marker).
    assert [k for k in _keys(s3_server, prefix) if not k.endswith("/")] == [f"{prefix}/v1/card.json"]


def test_a_version_is_uploaded_once_and_counts_when_its_card_is_there(bucket_location):
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier().fit([[0], [1]], [0, 1])
    model_store.save_model(bucket_location, "m1", model, {"model": "first"})
    stored = bucket_location.read_bytes("m1/card.json")
    # Saved again (a re-run, here or on another machine): the store keeps the first, and
    # so does this machine's copy.
    model_store.save_model(bucket_location, "m1", model, {"model": "second"})
    assert bucket_location.read_bytes("m1/card.json") == stored
    assert model_store.load_card(bucket_location, "m1")["model"] == "first"
    # A model whose card never went up (an upload stopped between the two) is not saved:
    # the next save uploads it.
    bucket_location.remove("m2/card.json")
    bucket_location.write_bytes("m2/model.skops", b"half a version")
    assert not model_store.has_model(bucket_location, "m2")
    model_store.save_model(bucket_location, "m2", model, {"model": "m2's"})
    assert model_store.has_model(bucket_location, "m2")
    assert model_store.load_card(bucket_location, "m2")["model"] == "m2's"


def test_a_pointer_naming_a_path_is_corrupt_not_a_crash(location):
    location.write_bytes("m1/model.skops", b"not read")
    location.write_bytes("m1/card.json", b"{}")
    for version in ("../m1", "m1/../m1", "", "a//b"):
        location.write_bytes(model_store.CHAMPION_POINTER, json.dumps({"version": version}).encode())
        with pytest.raises(model_store.CorruptPointerError, match="not a JSON object with a version"):
            model_store.read_champion(location)
        with pytest.raises(FileNotFoundError, match="cannot promote"):
            model_store.set_champion(location, version, "a path", "test")
        assert not model_store.has_model(location, version)
    for version in ("../m1", "champion.json"):
        with pytest.raises(ValueError, match="is not a model version"):
            model_store.load_model(location, version)
        with pytest.raises(ValueError, match="is not a model version"):
            model_store.save_model(location, version, None, {})


def test_a_compressed_file_is_stored_byte_for_byte(bucket_location, s3_server):
    """pyarrow guesses a compression from a name (`.gz`) unless told not to: a landing
    file gzipped by its producer must be the same bytes in the store and in the copy."""
    import gzip

    data = gzip.compress(b'{"user_id": "u1"}\n')
    part = bucket_location.cache / "interactions" / "date=2026-01-01" / "part-0.jsonl.gz"
    part.parent.mkdir(parents=True)
    part.write_bytes(data)
    bucket_location.publish("interactions/date=2026-01-01")
    key = bucket_location._key("interactions/date=2026-01-01/part-0.jsonl.gz").split("/", 1)[1]
    assert s3_server["client"].get_object(Bucket="flywheel", Key=key)["Body"].read() == data
    assert bucket_location.read_bytes("interactions/date=2026-01-01/part-0.jsonl.gz") == data
    part.unlink()
    assert bucket_location.local_copy("interactions/date=2026-01-01/part-0.jsonl.gz") \
        .read_bytes() == data


@pytest.mark.parametrize("name", ["../../x", "a//b"])
def test_an_object_whose_name_is_not_a_files_path_is_refused(bucket_location, s3_server,
                                                              tmp_path, name):
    """S3 keys are any strings; "../" in one would write outside the copy's folder."""
    day = "impressions/date=2026-01-01"
    bucket_location.write_bytes(f"{day}/part-0.jsonl", b"{}")
    s3_server["client"].put_object(Bucket="flywheel", Body=b"escape",
                                   Key=f"{bucket_location._key(day).split('/', 1)[1]}/{name}")
    with pytest.raises(storage.StorageConfigError, match="not a file's path") as refused:
        bucket_location.fetch(day, tmp_path / "copy" / "day")
    assert name in str(refused.value)
    assert not (tmp_path / "x").exists() and not (tmp_path / "copy").exists()


@pytest.mark.parametrize("uri, message", [
    ("gs://bucket/models", "gs:// is not supported"),
    ("s3:///models", "needs a bucket"),
    ("file://fileserver/models", "another host"),
])
def test_a_location_the_product_cannot_use_is_refused_by_name(tmp_path, uri, message):
    with pytest.raises(storage.StorageConfigError, match=message) as refused:
        storage.Location(uri, tmp_path)
    assert uri in str(refused.value)


def test_a_remote_uri_without_its_settings_is_refused():
    with pytest.raises(storage.StorageConfigError, match="pass a Location"):
        model_store.champion_version("s3://flywheel/models")


def test_relative_and_file_locations_are_folders_of_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_MODELS_URI", "shared/models")
    monkeypatch.setenv("FLYWHEEL_REPORTS_URI", f"file://{tmp_path / 'elsewhere'}")
    s = Settings.from_env(tmp_path / "data")
    assert s.models_dir == (tmp_path / "data" / "shared" / "models").resolve()
    assert s.reports_dir == tmp_path / "elsewhere" and not s.reports.remote
    assert s.landing_dir == (tmp_path / "data" / "landing").resolve()


@pytest.mark.slow
def test_the_wheel_on_a_bucket_writes_the_tables_of_the_wheel_on_folders(tmp_path, s3_server,
                                                                         monkeypatch):
    folders, bucket = tmp_path / "folders", tmp_path / "bucket"
    turn_the_wheel(folders, WORLD, DAYS)

    uris = {"FLYWHEEL_LANDING_URI": "s3://flywheel/landing",
            "FLYWHEEL_MODELS_URI": "s3://flywheel/models",
            "FLYWHEEL_REPORTS_URI": "s3://flywheel/reports/"}
    for name, value in {**s3_server["env"], **uris}.items():
        monkeypatch.setenv(name, value)
    instance = dg.DagsterInstance.ephemeral()
    turn_the_wheel(bucket, WORLD, DAYS, instance)
    s = Settings.from_env(bucket)
    assert s.landing.remote and s.models.remote and s.reports.remote

    # Every table, row for row, the same as with local folders (paths written as the
    # location they name: a folder there, a bucket here).
    with warehouse.connect(folders / "warehouse.duckdb", read_only=True) as local, \
            warehouse.connect(bucket / "warehouse.duckdb", read_only=True) as remote:
        assert warehouse.compare(local, remote, {str(folders.resolve()): "$DATA"},
                                 {"s3://flywheel": "$DATA"}) == {}
        registered = [r[0] for r in remote.execute(
            "SELECT path FROM ml.model_registry ORDER BY path").fetchall()]
        evaluated = [r[0] for r in remote.execute(
            "SELECT report_path FROM ml.model_evaluations ORDER BY 1").fetchall()]
    assert len(registered) == len(DAYS) and all(p.startswith("s3://flywheel/models/m")
                                                for p in registered)
    assert evaluated == [f"s3://flywheel/reports/evaluation/{d}" for d in DAYS]

    keys = set(_keys(s3_server, ""))
    for day in DAYS:
        for stream in s.ingest.required_streams:
            assert f"landing/{stream}/date={day}/_SUCCESS" in keys
        assert f"reports/evaluation/{day}/report.json" in keys
    for path in registered:
        version = path.rsplit("/", 1)[1]
        assert {f"models/{version}/model.skops", f"models/{version}/card.json"} <= keys
    # The gate's decisions were the folders' (compared above); an operator's promotion
    # moves the pointer in the bucket, under the lock, audited in the warehouse.
    assert model_store.champion_history(s.models) == model_store.champion_history(
        Settings.from_env(folders).models_dir)
    chosen = registered[-1].rsplit("/", 1)[1]
    assert main(["promote", "--version", chosen, "--reason", "storage by URI",
                 "--data-dir", str(bucket)]) == 0
    pointer = json.loads(s.models.read_text(model_store.CHAMPION_POINTER))
    assert pointer["version"] == chosen and pointer == model_store.read_champion(s.models)
    assert model_store.champion_history(s.models)[-1] == chosen
    # The pointer lives in the bucket only; ingestion's copies of the days are gone.
    assert not (bucket / "models" / model_store.CHAMPION_POINTER).exists()
    assert not list((bucket / "tmp").glob("landing-*"))

    # Another machine: an empty data dir, the same locations, serves the same champion.
    from flywheel_assets.serve.serving import current_policy

    other = Settings.from_env(tmp_path / "other")
    assert not other.models_dir.exists()
    policy = current_policy(other)
    assert policy.version == pointer["version"]
    assert (other.models_dir / pointer["version"] / "model.skops").is_file()

    # The landing sensor sees a day landed in the bucket and not yet ingested.
    from flywheel_assets.monitor.sensors import landing_sensor
    from flywheel_assets.resources import FlywheelResource

    next_day = "2026-01-03"
    land_day(bucket, WORLD, next_day)
    for stream in s.ingest.required_streams:  # only the bucket has the day now
        shutil.rmtree(s.landing.cache / stream / f"date={next_day}")
    with dg.build_sensor_context(instance=instance, resources={
            "flywheel": FlywheelResource(data_dir=str(bucket))}) as context:
        result = landing_sensor(context)
    assert [r.partition_key for r in result.run_requests] == [next_day]

    # A day whose marker is missing in the bucket is refused, naming the bucket's folder.
    s.landing.remove(f"interactions/date={next_day}/_SUCCESS")
    from flywheel_assets.definitions import INGEST_ASSETS, build_definitions

    job = build_definitions(str(bucket)).resolve_job_def("daily_rotation_job")
    run = job.execute_in_process(partition_key=next_day, instance=instance, raise_on_error=False,
                                 asset_selection=[dg.AssetKey(k) for k in INGEST_ASSETS])
    failures = [str(e.event_specific_data.error) for e in run.all_events if e.is_step_failure]
    assert not run.success and any(f"s3://flywheel/landing/interactions/date={next_day}" in f
                                   for f in failures), failures


def test_temporary_keys_reach_the_locations_and_the_lake(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIATEMPORARY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "token-of-the-session")
    assert storage.S3Options.from_env().session_token == "token-of-the-session"
    assert ("SESSION_TOKEN", "token-of-the-session") in Settings.from_env(tmp_path).s3_options()
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    assert "SESSION_TOKEN" not in dict(Settings.from_env(tmp_path).s3_options())


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_the_demo_will_not_mix_an_earlier_world_from_a_location_it_does_not_own(
        kind, tmp_path, monkeypatch, capsys, request):
    """`flywheel demo` empties its data dir's folders; a bucket or a folder elsewhere
    that holds an earlier run's champion is refused, not read and not deleted."""
    if kind == "s3":
        for name, value in request.getfixturevalue("s3_server")["env"].items():
            monkeypatch.setenv(name, value)
        uri = f"s3://flywheel/{tmp_path.name}/models"
    else:
        uri = f"file://{tmp_path / 'shared' / 'models'}"
    monkeypatch.setenv("FLYWHEEL_MODELS_URI", uri)
    data = tmp_path / "data"
    models = Settings.from_env(data).models
    models.write_bytes(model_store.CHAMPION_POINTER, b'{"version": "m20260101-earlier"}')
    (data / "landing").mkdir(parents=True)
    (data / "landing" / "kept.txt").write_text("an earlier demo's landing zone")

    assert main(["demo", "--days", "1", "--quiet", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"models at {models.where()} holds champion.json" in err and "FLYWHEEL_MODELS_URI" in err
    assert models.exists(model_store.CHAMPION_POINTER)  # not deleted
    assert (data / "landing" / "kept.txt").exists()  # refused before anything was reset
