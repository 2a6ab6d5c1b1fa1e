"""The Kubernetes deployment (deploy/, docs/deploy.md), checked without a cluster, a
Docker daemon or the network.

- deploy/dagster.yaml is loaded the way Dagster loads an instance: every class it names
  is imported and its config validated against the class's schema; the run launcher is
  built against a fake cluster, and launches a run into a recorder instead of the
  Kubernetes API, so the Job a run pod would get is looked at.
- deploy/dagster.yaml (the instance) and deploy/helm/values.yaml (what the Helm chart
  renders it from) agree on what matters.
- deploy/Dockerfile copies files that exist and installs the `deploy` extra; its code
  locations are workspace.yaml's, and they import.
- docs/deploy.md names only files that exist, and every file the deployment needs.

What the chart renders from the values is known here from its source, not from running
it (no `helm` binary): the one place that matters, the container context a code location
gives its run pods, is mirrored in :func:`chart_container_context`.
"""

import importlib
import re
import socket
import sys
import uuid
from fnmatch import fnmatch
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.instance.ref import InstanceRef
from dagster._core.launcher import LaunchRunContext
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._serdes import ConfigurableClassData

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
INSTANCE_YAML = DEPLOY / "dagster.yaml"
VALUES_YAML = DEPLOY / "helm" / "values.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
GUIDE = ROOT / "docs" / "deploy.md"
WORKSPACE_YAML = ROOT / "workspace.yaml"
LOCAL_INSTANCE_YAML = ROOT / "flywheel_assets" / "dagster.yaml"

# The key under which the chart (and dagster-k8s's run pods) read the Postgres password
# from its Secret.
PG_PASSWORD_KEY = "postgresql-password"


# --- reading the files ---------------------------------------------------------------

@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load(VALUES_YAML.read_text())


@pytest.fixture(scope="module")
def instance() -> dict:
    return yaml.safe_load(INSTANCE_YAML.read_text())


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def instruction(dockerfile, keyword: str) -> list[str]:
    return [rest for kw, rest in dockerfile if kw == keyword]


@pytest.fixture
def pg_password(monkeypatch):
    """The chart's pods get DAGSTER_PG_PASSWORD from the Secret; the instance reads it."""
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "not-a-real-password")


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(sock, address):
        raise AssertionError(f"tried to connect to {address}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def kubeconfig(tmp_path) -> Path:
    """A minimal kubeconfig for a cluster that is not there (nothing listens on port 1)."""
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "fake", "user": {"token": "not-a-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}]}))
    return path


def instance_ref(base_dir: Path) -> InstanceRef:
    """What Dagster makes of deploy/dagster.yaml when an instance loads it: the whole
    file validated against the instance schema (with its rules, e.g. no run limit in
    run_coordinator beside `concurrency`), and each part as the class data it names,
    not yet constructed."""
    return InstanceRef.from_dir(str(base_dir), config_dir=str(DEPLOY),
                                config_filename=INSTANCE_YAML.name)


def named_classes(ref: InstanceRef) -> dict[str, ConfigurableClassData]:
    parts = {
        "storage": ref.storage_data, "run_storage": ref.run_storage_data,
        "event_log_storage": ref.event_storage_data,
        "schedule_storage": ref.schedule_storage_data, "scheduler": ref.scheduler_data,
        "run_coordinator": ref.run_coordinator_data, "run_launcher": ref.run_launcher_data,
        "compute_logs": ref.compute_logs_data,
        "local_artifact_storage": ref.local_artifact_storage_data,
        "secrets": ref.secrets_loader_data, "defs_state_storage": ref.defs_state_storage_data}
    return {part: data for part, data in parts.items() if data is not None}


def load_class(data: ConfigurableClassData) -> type:
    module = importlib.import_module(data.module_name)
    assert hasattr(module, data.class_name), f"{data.module_name} has no {data.class_name}"
    return getattr(module, data.class_name)


def validated(data: ConfigurableClassData) -> dict:
    """The class's config from the file, processed by the class's own schema (what
    ``ConfigurableClassData.rehydrate`` does before it constructs)."""
    klass = load_class(data)
    result = process_config(resolve_to_config_type(klass.config_type()), data.config_dict)
    assert result.success, (f"{data.class_name}: " +
                            "; ".join(e.message for e in result.errors or []))
    return dict(result.value)


def deployments(values: dict) -> dict[str, dict]:
    return {d["name"]: d for d in values["dagster-user-deployments"]["deployments"]}


def k8s_launcher(values: dict) -> dict:
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    return values["runLauncher"]["config"]["k8sRunLauncher"]


def module_of(deployment: dict) -> str:
    """The module a code location serves (`dagster api grpc -m MODULE`)."""
    args = deployment["dagsterApiGrpcArgs"]
    assert args.count("-m") == 1, args
    return args[args.index("-m") + 1]


def env_of(deployment: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in deployment.get("env") or [] if "value" in e}


def data_mount(volumes: list[dict], mounts: list[dict]) -> tuple[str, str]:
    """(claim, mount path) of the one PersistentVolumeClaim among ``volumes``."""
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in volumes
              if "persistentVolumeClaim" in v}
    assert len(claims) == 1, f"expected one data volume, got {claims}"
    (name, claim), = claims.items()
    paths = [m["mountPath"] for m in mounts if m["name"] == name]
    assert len(paths) == 1, f"volume {name} is mounted {len(paths)} times"
    return claim, paths[0]


def chart_container_context(values: dict, name: str, namespace: str) -> dict:
    """The container context the chart gives a code location's server, which the run
    launcher merges over its own config for every run of that location: our reading of
    the chart's `dagsterUserDeployments.k8sContainerContext` template (chart
    dagster-user-deployments, helpers/_helpers.tpl), for release `dagster`."""
    deployment = deployments(values)[name]
    assert deployment.get("includeConfigInLaunchedRuns", {}).get("enabled", True)
    k8s = {
        "image_pull_policy": deployment["image"]["pullPolicy"],
        "env_config_maps": [f"dagster-dagster-user-deployments-{name}-user-env",
                            *[c["name"] for c in deployment.get("envConfigMaps") or []]],
        "namespace": namespace,
        "service_account_name": "dagster-dagster-user-deployments-user-deployments",
    }
    if deployment.get("envSecrets"):
        k8s["env_secrets"] = [secret["name"] for secret in deployment["envSecrets"]]
    if deployment.get("volumeMounts"):
        k8s["volume_mounts"] = deployment["volumeMounts"]
    if deployment.get("volumes"):
        k8s["volumes"] = deployment["volumes"]
    if isinstance(deployment.get("env"), list):
        k8s["env"] = deployment["env"]
    return {"k8s": k8s}


# --- (a) the instance loads --------------------------------------------------------------

def test_every_class_the_instance_names_loads_and_accepts_its_config(tmp_path, pg_password):
    classes = named_classes(instance_ref(tmp_path))
    names = {data.class_name for data in classes.values()}
    assert {"K8sRunLauncher", "QueuedRunCoordinator", "DagsterDaemonScheduler",
            "DagsterPostgresStorage", "PostgresRunStorage", "PostgresEventLogStorage",
            "PostgresScheduleStorage"} <= names, names
    for part, data in classes.items():
        klass = load_class(data)
        assert callable(getattr(klass, "config_type", None)), f"{part}: not configurable"
        assert callable(getattr(klass, "from_config_value", None)), f"{part}: not configurable"
        validated(data)


def test_the_run_launcher_builds_against_a_fake_cluster_without_contacting_it(
        tmp_path, pg_password, kubeconfig, no_network, instance):
    from dagster_k8s import K8sRunLauncher

    data = instance_ref(tmp_path).run_launcher_data
    config = {**validated(data), "load_incluster_config": False,
              "kubeconfig_file": str(kubeconfig)}
    launcher = K8sRunLauncher.from_config_value(data, config)
    declared = instance["run_launcher"]["config"]
    assert launcher.job_namespace == declared["job_namespace"]
    assert launcher.service_account_name == declared["service_account_name"]
    assert launcher.instance_config_map == declared["instance_config_map"]
    assert launcher.postgres_password_secret == declared["postgres_password_secret"]
    assert launcher.image_pull_policy == declared["image_pull_policy"]


class RecordingBatchApi:
    """Stands in for Kubernetes' BatchV1Api: keeps the Jobs it is asked to create."""

    def __init__(self):
        self.created = []

    def create_namespaced_job(self, body, namespace, **_):
        self.created.append((namespace, body))


def test_a_run_pod_gets_the_data_volume_its_path_and_the_password_once(
        tmp_path, pg_password, kubeconfig, no_network, values, instance, dockerfile):
    """A run of each location, launched as the daemon would: the run launcher from
    deploy/dagster.yaml (on the fake cluster) merges the location's container context
    (what the chart derives from its deployment in values.yaml) over its own config.
    The volume and FLYWHEEL_DATA_DIR come from both: they must arrive once."""
    from dagster_k8s import K8sRunLauncher

    data = instance_ref(tmp_path).run_launcher_data
    batch = RecordingBatchApi()
    launcher = K8sRunLauncher.from_config_value(data, {
        **validated(data), "load_incluster_config": False, "kubeconfig_file": str(kubeconfig),
        # Only the API that creates Jobs is replaced, so nothing is sent anywhere.
        "k8s_client_batch_api": batch})
    namespace = instance["run_launcher"]["config"]["job_namespace"]
    uid = int(instruction(dockerfile, "USER")[-1].split(":")[0])
    claim, _ = data_mount(k8s_launcher(values)["volumes"], k8s_launcher(values)["volumeMounts"])
    with dg.instance_for_test() as dagster_instance:
        launcher.register_instance(dagster_instance)
        for name, deployment in deployments(values).items():
            image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
            origin = JobPythonOrigin("daily_rotation_job", RepositoryPythonOrigin(
                executable_path=sys.executable,
                code_pointer=ModuleCodePointer(module_of(deployment), "defs", None),
                container_image=image, entry_point=None,
                container_context=chart_container_context(values, name, namespace)))
            run = dagster_instance.add_run(dg.DagsterRun(
                job_name="daily_rotation_job", run_id=str(uuid.uuid4()), job_code_origin=origin))
            batch.created.clear()
            launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))

            (job_namespace, job), = batch.created
            pod = job.spec.template.spec
            container = pod.containers[0]
            assert job_namespace == namespace, name
            assert container.image == image, name
            volumes = [v for v in pod.volumes if v.persistent_volume_claim]
            assert [(v.name, v.persistent_volume_claim.claim_name) for v in volumes] == \
                [("flywheel-data", claim)], f"{name}: {pod.volumes}"
            mounts = [m.mount_path for m in container.volume_mounts if m.name == "flywheel-data"]
            assert len(mounts) == 1, f"{name}: {container.volume_mounts}"
            env_names = [e.name for e in container.env]
            assert len(env_names) == len(set(env_names)), f"{name}: duplicated env {env_names}"
            env = {e.name: e for e in container.env}
            assert env["FLYWHEEL_DATA_DIR"].value == mounts[0], name
            password = env["DAGSTER_PG_PASSWORD"].value_from.secret_key_ref
            assert (password.name, password.key) == \
                (values["global"]["postgresqlSecretName"], PG_PASSWORD_KEY), name
            assert pod.security_context.fs_group == uid, f"{name}: volume not writable by {uid}"
            secrets = {s.secret_ref.name for s in container.env_from or [] if s.secret_ref}
            assert secrets == {s["name"] for s in deployment.get("envSecrets") or []}, name


def test_the_postgres_storage_names_a_driver_that_is_installed(tmp_path, pg_password,
                                                               no_network):
    """Constructing DagsterPostgresStorage (or its run, event log and schedule storages)
    connects at once: it inspects the server's tables to create the missing ones (with
    retries) in its __init__. So the storages are only validated (the first test), and
    here the URL their config makes is opened the way they open it, which is lazy: the
    driver is loaded, nothing is connected."""
    from dagster_postgres.utils import create_pg_engine, pg_url_from_config

    url = pg_url_from_config(validated(instance_ref(tmp_path).storage_data))
    engine = create_pg_engine(url)
    # A bare postgresql:// means psycopg 3 under SQLAlchemy 2.1; dagster-postgres
    # installs and works with psycopg2.
    assert engine.dialect.driver == "psycopg2", url
    assert engine.url.password == "not-a-real-password"


# --- (b) the instance and the chart's values agree ------------------------------------------

def test_pool_and_run_limits_agree(values, instance):
    local = yaml.safe_load(LOCAL_INSTANCE_YAML.read_text())
    chart = values["concurrency"]
    assert chart["enabled"] is True
    # The `duckdb` pool has no limit of its own anywhere: the default limit is its limit.
    assert chart["pools"] == {"defaultLimit": 1}
    assert instance["concurrency"]["pools"] == {"default_limit": 1}
    assert local["concurrency"]["pools"]["default_limit"] == 1
    assert instance["concurrency"]["runs"]["max_concurrent_runs"] == \
        chart["runs"]["maxConcurrentRuns"]
    # Dagster refuses run limits in run_coordinator beside `concurrency`; the chart
    # refuses them in both of its places.
    queued = values["dagsterDaemon"]["runCoordinator"]
    assert queued["enabled"] and queued["type"] == "QueuedRunCoordinator"
    assert queued["config"]["queuedRunCoordinator"]["maxConcurrentRuns"] is None
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert not instance["run_coordinator"].get("config")


def test_the_warehouse_writers_are_in_the_pool_the_limit_covers():
    """Every executable asset of a kind `duckdb` (it writes the warehouse) runs in the
    pool `duckdb`, the one the limit of one covers."""
    writers, outside = 0, []
    for module in ("flywheel_assets.definitions", "flywheel_assets.simulation.definitions"):
        graph = importlib.import_module(module).defs.resolve_asset_graph()
        for ad in graph.assets_defs:
            if not ad.is_executable or not any("duckdb" in spec.kinds for spec in ad.specs):
                continue
            writers += 1
            if getattr(ad.node_def, "pool", None) != "duckdb":
                outside.append(ad.node_def.name)
    assert writers >= 10 and outside == [], (writers, outside)


def test_postgres_server_agrees(values, instance):
    db = instance["storage"]["postgres"]["postgres_db"]
    pg = values["postgresql"]
    assert pg["enabled"] is False  # an external server
    assert (db["hostname"], db["username"], db["db_name"], db["port"], db["scheme"]) == (
        pg["postgresqlHost"], pg["postgresqlUsername"], pg["postgresqlDatabase"],
        pg["service"]["port"], pg["postgresqlScheme"])
    assert db["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert values["generatePostgresqlPasswordSecret"] is False
    assert instance["run_launcher"]["config"]["postgres_password_secret"] == \
        values["global"]["postgresqlSecretName"]


def test_run_pods_and_code_servers_mount_the_data_volume_at_the_data_dir(values, instance):
    chart = k8s_launcher(values)
    declared = instance["run_launcher"]["config"]
    assert declared["volumes"] == chart["volumes"]
    assert declared["volume_mounts"] == chart["volumeMounts"]
    assert declared["env_vars"] == chart["envVars"]
    assert declared["run_k8s_config"] == {
        "pod_spec_config": chart["runK8sConfig"]["podSpecConfig"],
        "job_spec_config": chart["runK8sConfig"]["jobSpecConfig"]}
    assert declared["image_pull_policy"] == chart["imagePullPolicy"]
    assert declared["load_incluster_config"] is chart["loadInclusterConfig"] is True
    assert declared["dagster_home"] == values["global"]["dagsterHome"]
    claim, path = data_mount(chart["volumes"], chart["volumeMounts"])
    assert dict(v.split("=", 1) for v in chart["envVars"])["FLYWHEEL_DATA_DIR"] == path
    for name, deployment in deployments(values).items():
        assert data_mount(deployment["volumes"], deployment["volumeMounts"]) == (claim, path), name
        assert env_of(deployment)["FLYWHEEL_DATA_DIR"] == path, name
        assert deployment["podSecurityContext"]["fsGroup"] == \
            chart["runK8sConfig"]["podSpecConfig"]["securityContext"]["fsGroup"], name


def test_run_monitoring_and_telemetry_agree(values, instance):
    chart = values["dagsterDaemon"]["runMonitoring"]
    snake = {re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower(): value for key, value in chart.items()}
    assert snake == instance["run_monitoring"]
    assert instance["run_monitoring"]["enabled"] is True
    assert values["telemetry"] == {"enabled": False}
    assert instance["telemetry"] == {"enabled": False}


# --- (c) the image ------------------------------------------------------------------------

def test_the_dockerfile_copies_what_exists_and_installs_the_deploy_extra(dockerfile, values):
    ignored = [line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    copies = instruction(dockerfile, "COPY")
    assert copies
    for copy in copies:
        sources = [s for s in copy.split()[:-1] if not s.startswith("--")]
        assert sources, copy
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            hit = [p for p in ignored if fnmatch(source.rstrip("/"), p)]
            assert not hit, f"COPY {source} is excluded by .dockerignore {hit}"
    copied = {s.rstrip("/") for copy in copies for s in copy.split()[:-1]}
    assert {"pyproject.toml", "README.md", "flywheel_assets"} <= copied

    installs = [run for run in instruction(dockerfile, "RUN") if "pip install" in run]
    assert len(installs) == 1, installs
    extras = re.findall(r"\"?\.\[([\w,-]+)\]\"?", installs[0])
    assert extras and "deploy" in extras[0].split(","), installs[0]
    import tomllib
    deploy_extra = tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "project"]["optional-dependencies"]["deploy"]
    assert {re.split(r"[<>=!~ ]", r)[0] for r in deploy_extra} >= {"dagster-postgres",
                                                                   "dagster-k8s"}

    # The dagster it pins is this venv's, the one the chart's version must match.
    (arg,) = [a for a in instruction(dockerfile, "ARG") if a.startswith("DAGSTER_VERSION=")]
    assert arg.split("=", 1)[1] == dg.__version__
    assert "dagster==${DAGSTER_VERSION}" in installs[0]

    user = instruction(dockerfile, "USER")[-1].split(":")[0]
    assert user not in ("root", "0") and user.isdigit(), f"USER {user}"
    ports = {int(p) for p in " ".join(instruction(dockerfile, "EXPOSE")).split()}
    assert ports == {d["port"] for d in deployments(values).values()} == {3030}
    for deployment in deployments(values).values():
        security = deployment["podSecurityContext"]
        assert security["runAsUser"] == security["fsGroup"] == int(user), deployment["name"]

    cmd = yaml.safe_load(instruction(dockerfile, "CMD")[-1])  # the exec form is a list
    assert cmd[:3] == ["dagster", "api", "grpc"] and "3030" in cmd
    assert cmd[cmd.index("-m") + 1] == module_of(deployments(values)["flywheel"])
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(instruction(dockerfile, "ENV"))))
    assert env["FLYWHEEL_DATA_DIR"] == env_of(deployments(values)["flywheel"])["FLYWHEEL_DATA_DIR"]
    assert env["DAGSTER_HOME"] == values["global"]["dagsterHome"]


def test_the_code_locations_are_the_workspace_s_and_import(values):
    workspace = yaml.safe_load(WORKSPACE_YAML.read_text())
    in_workspace = {entry["python_module"]["location_name"]: entry["python_module"]["module_name"]
                    for entry in workspace["load_from"]}
    in_chart = {name: module_of(d) for name, d in deployments(values).items()}
    assert in_chart == in_workspace
    assert len(in_chart) == 2
    for module_name in in_chart.values():
        module = importlib.import_module(module_name)
        assert any(isinstance(v, dg.Definitions) for v in vars(module).values()), module_name


# --- (d) the guide ------------------------------------------------------------------------

# Files of this repository as the guide names them: a path under one of its folders, or
# a file at its root.
REPO_PATH = re.compile(
    r"(?<![\w./-])((?:deploy|docs|flywheel_assets|flywheel_assets_tests)/[\w./-]*[\w-]"
    r"|\.dockerignore|workspace\.yaml|pyproject\.toml|README\.md|Makefile)(?![\w/-])")
NEEDED = {"deploy/Dockerfile", ".dockerignore", "deploy/helm/values.yaml", "deploy/dagster.yaml",
          "workspace.yaml", "flywheel_assets/dagster.postgres.yaml",
          "flywheel_assets_tests/test_deploy.py"}


def test_the_guide_names_files_that_exist_and_every_file_it_needs():
    text = GUIDE.read_text()
    named = set(REPO_PATH.findall(text))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"docs/deploy.md names files that do not exist: {missing}"
    assert NEEDED <= named, f"docs/deploy.md does not name {sorted(NEEDED - named)}"


def test_the_guide_s_commands_match_the_files(values, instance, dockerfile):
    text = GUIDE.read_text()
    commands = re.sub(r"\s*\\\n\s*", " ", text)  # continued command lines joined
    assert "helm repo add dagster https://dagster-io.github.io/helm" in commands
    installs = re.findall(r"helm upgrade --install (\S+) dagster/dagster([^\n]*)", commands)
    assert installs, "no `helm upgrade --install ... dagster/dagster` in docs/deploy.md"
    (arg,) = [a for a in instruction(dockerfile, "ARG") if a.startswith("DAGSTER_VERSION=")]
    launcher = instance["run_launcher"]["config"]
    for release, rest in installs:
        # The instance ConfigMap and the service account are named after the release.
        assert launcher["instance_config_map"] == f"{release}-instance"
        assert launcher["service_account_name"] == release
        assert re.search(rf"--version {re.escape(arg.split('=', 1)[1])}\b", rest), rest
        assert f"--namespace {launcher['job_namespace']}" in rest, rest
        assert "-f deploy/helm/values.yaml" in rest, rest

    secrets = dict(re.findall(
        r"kubectl create secret generic (\S+) --namespace \S+ --from-literal=([\w-]+)=", commands))
    assert secrets.get(values["global"]["postgresqlSecretName"]) == PG_PASSWORD_KEY, secrets
    for deployment in deployments(values).values():
        for secret in deployment.get("envSecrets") or []:
            assert secret["name"] in secrets, f"the guide does not create {secret['name']}"

    manifests = [doc for block in re.findall(r"```yaml\n(.*?)```", text, re.S)
                 for doc in yaml.safe_load_all(block) if isinstance(doc, dict)]
    claims = [m for m in manifests if m.get("kind") == "PersistentVolumeClaim"]
    claim, _ = data_mount(k8s_launcher(values)["volumes"], k8s_launcher(values)["volumeMounts"])
    assert [(c["metadata"]["name"], c["metadata"]["namespace"]) for c in claims] == \
        [(claim, launcher["job_namespace"])], claims
