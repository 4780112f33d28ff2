"""deploy/kubernetes, checked without a cluster: schemas, commands, secrets, the fleet's shape.

Every manifest validates against the Kubernetes JSON schemas of a fixed version (`kubernetes-validate`
bundles them; strict: unknown fields are errors). Every `ecgsearch` command in a container (its args, or
an `sh -c` script) parses with the real click CLI after Kubernetes' `$(VAR)` expansion from the
container's own environment. No password is written anywhere: only Secret references.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
BASE = REPO_ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.31.0"
SECRET_PLACEHOLDER = "<from-secret>"
PROXY_URL = "grpc://storage-proxy:13000"
# $(VAR) is expanded by the kubelet in command, args and env values; $$ is a literal dollar.
REFERENCE = re.compile(r"(?<!\$)\$\((?P<name>[A-Za-z_][A-Za-z0-9_]*)\)")


def load_manifests() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(BASE.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


MANIFESTS = load_manifests()


def find(kind: str, name: str) -> dict[str, Any]:
    [found] = [m for m in MANIFESTS if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def config_data() -> dict[str, str]:
    return find("ConfigMap", "ecgsearch-config")["data"]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def all_containers() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for manifest in MANIFESTS:
        if "template" in manifest.get("spec", {}):
            spec = pod_spec(manifest)
            for container in spec.get("initContainers", []) + spec["containers"]:
                found.append((f"{manifest['metadata']['name']}/{container['name']}", container))
    return found


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment the kubelet gives the container: envFrom ConfigMaps, then env in order, with `$(VAR)`
    expanded from what precedes it; a Secret's value stands as a placeholder."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(find("ConfigMap", source["configMapRef"]["name"])["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = expand(entry["value"], env)
        elif "secretKeyRef" in entry["valueFrom"]:
            env[entry["name"]] = SECRET_PLACEHOLDER
        elif "fieldRef" in entry["valueFrom"]:
            env[entry["name"]] = "0"  # e.g. the completion index
        else:
            raise AssertionError(f"unexpected env source {entry}")
    return env


def expand(text: str, env: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        assert match["name"] in env, f"$({match['name']}) is not defined before it is used"
        return env[match["name"]]

    return REFERENCE.sub(replace, text).replace("$$", "$")


def ecgsearch_commands(container: dict[str, Any]) -> list[list[str]]:
    """The argv (after `ecgsearch`) of every ecgsearch invocation in the container."""
    env = container_env(container)
    command = [expand(part, env) for part in container.get("command", [])]
    args = [expand(part, env) for part in container.get("args", [])]
    if container["image"] == "ecgsearch" and not command:  # the image's ENTRYPOINT is ["ecgsearch"]
        return [args]
    if command[:2] == ["sh", "-c"]:
        script = re.sub(r'"\$(\w+)"', lambda m: shlex.quote(env[m[1]]), command[2])
        # `ecgsearch` in command position: the script's start, or after until/while/do/then/;/&&/||.
        found = re.findall(r"(?:^|\buntil |\bwhile |\bdo |\bthen |; |&& |\|\| )ecgsearch ([^;&|>]*)", script)
        return [shlex.split(part) for part in found]
    return []


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda m: f"{m['kind']}/{m['metadata']['name']}")
def test_every_manifest_validates_against_the_kubernetes_schemas(manifest: dict[str, Any]) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_the_validation_rejects_a_broken_manifest() -> None:
    import kubernetes_validate

    broken = copy.deepcopy(find("Job", "workers"))
    broken["spec"]["completionMode"] = "Indexed"
    broken["spec"]["parallelism"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_and_sets_no_namespace() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    files = {path.name for path in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert "namespace" not in kustomization and all("namespace" not in m["metadata"] for m in MANIFESTS)
    assert [image["name"] for image in kustomization["images"]] == ["ecgsearch"]


@pytest.mark.parametrize("name", [name for name, c in all_containers() if ecgsearch_commands(c)])
def test_every_ecgsearch_command_parses(name: str, parse_command, monkeypatch: pytest.MonkeyPatch) -> None:
    container = dict(all_containers())[name]
    for key, value in container_env(container).items():
        monkeypatch.setenv(key, value)  # what click's envvar options read in the pod
    for argv in ecgsearch_commands(container):
        command, _params = parse_command(argv)  # click's UsageError on an unknown flag or a bad value
        assert command == argv[0]


def parsed(name: str, parse_command, monkeypatch: pytest.MonkeyPatch, index: int = 0) -> dict[str, Any]:
    container = dict(all_containers())[name]
    monkeypatch.delenv("ECGSEARCH_STORAGE", raising=False)
    for key, value in container_env(container).items():
        monkeypatch.setenv(key, value)
    return parse_command(ecgsearch_commands(container)[index])[1]


def test_the_study_is_created_from_the_database_and_the_workers_join_through_the_proxy(
    parse_command, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_data()
    database = (
        f"postgresql+psycopg://{config['POSTGRES_USER']}:{SECRET_PLACEHOLDER}@postgres:5432/{config['POSTGRES_DB']}"
    )
    create = parsed("create-study/create-study", parse_command, monkeypatch)
    assert create["create_only"] and create["storage"] == database
    assert (create["space"], create["study_name"]) == (config["ECGSEARCH_SPACE"], config["ECGSEARCH_STUDY"])
    assert (create["trials"], create["epochs"]) == (int(config["ECGSEARCH_TRIALS"]), int(config["ECGSEARCH_EPOCHS"]))
    worker = parsed("workers/worker", parse_command, monkeypatch)
    assert worker["study_name"] == create["study_name"] and worker["storage"] == PROXY_URL
    assert worker["worker_label"] == "0" and worker["gpus"] == "all"
    assert parsed("workers/wait-for-study", parse_command, monkeypatch)["storage"] == PROXY_URL
    proxy = parsed("storage-proxy/storage-proxy", parse_command, monkeypatch)
    assert proxy["storage"] == database and proxy["host"] == "0.0.0.0"
    assert proxy["grace_period"] >= 3 * worker["heartbeat_interval"], "a trial must survive a lost beat or two"
    service = find("Service", "storage-proxy")
    assert f"grpc://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}" == PROXY_URL
    assert parsed("dashboard/dashboard", parse_command, monkeypatch)["storage"] == database


def test_workers_are_an_indexed_gpu_job_whose_index_names_each_worker() -> None:
    job = find("Job", "workers")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["parallelism"] == spec["completions"] >= 1
    [worker] = pod_spec(job)["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    [label] = [e for e in worker["env"] if e["name"] == "ECGSEARCH_WORKER_LABEL"]
    assert (
        label["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )
    # Restarts that lose nothing: a dead pod's trial is retried by the proxy, its index by the Job;
    # a wrong flag, dataset or study fails the whole Job at once.
    assert pod_spec(job)["restartPolicy"] == "Never" and spec["backoffLimitPerIndex"] >= 1
    [fail_fast] = [rule for rule in spec["podFailurePolicy"]["rules"] if rule["action"] == "FailJob"]
    assert set(fail_fast["onExitCodes"]["values"]) == {2, 3, 5}


def test_the_dataset_reaches_every_pod_identically_and_read_only() -> None:
    claim = find("PersistentVolumeClaim", "ecgsearch-data")
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    for name in ("create-study", "workers"):
        spec = pod_spec(find("Job", name))
        [volume] = [v for v in spec["volumes"] if v["name"] == "data"]
        assert volume["persistentVolumeClaim"] == {"claimName": "ecgsearch-data", "readOnly": True}
        mounts = [m for c in spec["containers"] for m in c["volumeMounts"] if m["name"] == "data"]
        assert mounts == [{"name": "data", "mountPath": "/data", "readOnly": True}]


def test_the_study_creator_waits_for_the_database() -> None:
    [wait] = pod_spec(find("Job", "create-study"))["initContainers"]
    assert "pg_isready" in " ".join(wait["command"]) and "until" in wait["command"][2]


def test_no_password_is_written_in_clear() -> None:
    assert not [m for m in MANIFESTS if m["kind"] == "Secret"], "Secrets are created by the user, not shipped"
    text = "\n".join(path.read_text() for path in BASE.glob("*.yaml"))
    for match in re.finditer(r"://(?P<user>[^:@/\s]+):(?P<password>[^@\s]+)@", text):
        assert REFERENCE.fullmatch(match["password"]), f"literal password in {match[0]!r}"
        assert REFERENCE.fullmatch(match["user"]), f"literal user in {match[0]!r}"
    for name, container in all_containers():
        for entry in container.get("env", []):
            if "PASSWORD" in entry["name"]:
                assert "value" not in entry, f"{name}: {entry['name']} must come from a Secret"
                assert entry["valueFrom"]["secretKeyRef"] == {"name": "ecgsearch-postgres", "key": "password"}
        argv = " ".join(container.get("command", []) + container.get("args", []))
        assert "PASSWORD" not in argv and "postgresql" not in argv, f"{name}: a database URL in argv"
    assert not any("PASSWORD" in key for key in config_data())


def test_web_uis_and_storage_are_cluster_internal() -> None:
    assert not [m for m in MANIFESTS if m["kind"] == "Ingress"]
    for service in (m for m in MANIFESTS if m["kind"] == "Service"):
        assert service["spec"]["type"] == "ClusterIP", service["metadata"]["name"]
    policy = find("NetworkPolicy", "ecgsearch-storage")
    assert set(policy["spec"]["podSelector"]["matchExpressions"][0]["values"]) == {"postgres", "storage-proxy"}


def test_mlflow_server_flags_exist_in_the_installed_mlflow() -> None:
    from mlflow.cli import server

    [container] = pod_spec(find("Deployment", "mlflow"))["containers"]
    assert container["command"] == ["mlflow"] and container["args"][0] == "server"
    context = server.make_context("mlflow server", container["args"][1:], resilient_parsing=False)
    assert context.params["artifacts_destination"] == container["volumeMounts"][0]["mountPath"]
    assert {option.envvar for option in server.params if "--backend-store-uri" in option.opts} == {
        "MLFLOW_BACKEND_STORE_URI"
    }
    env = container_env(container)
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    init = find("ConfigMap", "postgres-init")["data"]
    assert any(re.search(r"CREATE DATABASE mlflow\s*;", sql) for sql in init.values())
