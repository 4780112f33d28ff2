"""docker-compose.yml, Dockerfile and .env.example, checked without a Docker engine.

Every ecgsearch command in the compose file must parse with the real click CLI, every
`mlflow server` flag must exist in the installed MLflow, and no credential may be written
into the file itself.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
SERVICES = ("postgres", "mlflow", "dashboard", "create", "worker")
ECGSEARCH_SERVICES = ("dashboard", "create", "worker")
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}; `$$` is a literal dollar.
VARIABLE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def read_env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def substitute(value, env: dict[str, str]):
    """What docker compose makes of `value` with .env = `env` (recursively for lists and dicts)."""
    if isinstance(value, str):

        def replace(match: re.Match) -> str:
            name, op, arg = match["name"], match["op"], match["arg"]
            if name in env and (env[name] != "" or not op or not op.startswith(":")):
                return env[name]
            if op and op.endswith("-"):
                return arg
            raise KeyError(f"docker-compose.yml uses ${{{name}}}, which .env.example does not define")

        return VARIABLE.sub(replace, value).replace("$$", "$")
    if isinstance(value, list):
        return [substitute(item, env) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, env) for key, item in value.items()}
    return value


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose(raw_compose: dict) -> dict:
    return substitute(raw_compose, read_env_example())


def argv_of(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def effective_storage(service: dict, parse_command, monkeypatch: pytest.MonkeyPatch) -> str:
    """The storage URL the ecgsearch process in `service` resolves: --storage, else the service's environment."""
    monkeypatch.delenv("ECGSEARCH_STORAGE", raising=False)
    if "ECGSEARCH_STORAGE" in service.get("environment", {}):
        monkeypatch.setenv("ECGSEARCH_STORAGE", service["environment"]["ECGSEARCH_STORAGE"])
    return parse_command(argv_of(service))[1]["storage"]


def test_every_service_is_defined(raw_compose: dict) -> None:
    assert set(SERVICES) <= set(raw_compose["services"])
    assert {"postgres-data", "mlflow-artifacts"} <= set(raw_compose["volumes"])


@pytest.mark.parametrize("name", ECGSEARCH_SERVICES)
def test_ecgsearch_commands_are_real_subcommands_with_valid_flags(compose: dict, name: str, parse_command) -> None:
    from search.cli import cli

    service = compose["services"][name]
    assert "entrypoint" not in service, "ecgsearch services rely on the image's ENTRYPOINT [ecgsearch]"
    argv = argv_of(service)
    assert argv[0] in cli.commands, f"{name}: `ecgsearch {argv[0]}` is not a command ({sorted(cli.commands)})"
    command, _params = parse_command(argv)  # click's UsageError on any unknown flag or bad value
    assert command == argv[0]


def test_create_and_worker_agree_on_the_study_and_data(compose: dict, parse_command) -> None:
    services = compose["services"]
    _, create = parse_command(argv_of(services["create"]))
    _, worker = parse_command(argv_of(services["worker"]))
    env = read_env_example()
    assert create["create_only"]
    assert create["study_name"] == worker["study_name"] == env["ECGSEARCH_STUDY"]
    assert create["space"] == env["ECGSEARCH_SPACE"]
    assert worker["gpus"] == "all"
    assert any(volume.endswith(f":{create['data']}:ro") for volume in services["create"]["volumes"])
    assert services["create"]["volumes"] == services["worker"]["volumes"]
    assert services["create"]["restart"] == "no"
    assert services["create"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["create"]["condition"] == "service_completed_successfully"


def test_workers_dashboard_and_create_share_one_postgres_database(
    compose: dict, parse_command, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = read_env_example()
    urls = {
        name: effective_storage(compose["services"][name], parse_command, monkeypatch) for name in ECGSEARCH_SERVICES
    }
    expected = (
        f"postgresql+psycopg://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@postgres:5432/{env['POSTGRES_DB']}"
    )
    assert urls == dict.fromkeys(ECGSEARCH_SERVICES, expected)


def test_mlflow_server_flags_exist_in_the_installed_mlflow(raw_compose: dict, compose: dict) -> None:
    from mlflow.cli import server

    service = compose["services"]["mlflow"]
    assert service["entrypoint"] == ["mlflow"]
    argv = argv_of(service)
    assert argv[0] == "server"
    options = {option: param for param in server.params for option in param.opts}
    flags = [arg for arg in argv[1:] if arg.startswith("-")]
    assert flags, "mlflow server without flags"
    assert [flag for flag in flags if flag not in options] == []
    # Every flag's value parses as click would take it.
    context = server.make_context("mlflow server", argv[1:], resilient_parsing=False)
    assert context.params["workers"] == "1"
    assert context.params["host"] == "0.0.0.0"
    assert context.params["artifacts_destination"] in [v.split(":")[1] for v in service["volumes"]]
    assert "mlflow:5000" in context.params["allowed_hosts"].split(",")

    # The backend store URI comes from the environment variable --backend-store-uri reads.
    assert options["--backend-store-uri"].envvar == "MLFLOW_BACKEND_STORE_URI"
    env = read_env_example()
    assert service["environment"]["MLFLOW_BACKEND_STORE_URI"] == (
        f"postgresql+psycopg://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@postgres:5432/mlflow"
    )
    assert service["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    # The second database exists because the init script mounted into postgres creates it.
    init_mounts = [v for v in compose["services"]["postgres"]["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert len(init_mounts) == 1
    script = REPO_ROOT / init_mounts[0].split(":")[0]
    assert re.search(r"CREATE DATABASE mlflow\s*;", script.read_text())


def test_every_ecgsearch_service_reaches_mlflow_inside_the_network(compose: dict) -> None:
    for name in ECGSEARCH_SERVICES:
        assert compose["services"][name]["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_no_credential_is_written_in_the_compose_file(raw_compose: dict) -> None:
    text = COMPOSE.read_text()
    placeholder = read_env_example()["POSTGRES_PASSWORD"]
    assert placeholder not in text
    # Any user:password@ in a URL must be ${...} references.
    for match in re.finditer(r"://(?P<user>[^:@/\s]+):(?P<password>[^@\s]+)@", text):
        assert VARIABLE.fullmatch(match["password"]), f"literal password in {match[0]!r}"
        assert VARIABLE.fullmatch(match["user"]), f"literal user in {match[0]!r}"
    for name, service in raw_compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if "PASSWORD" in key:
                assert value == f"${{{key}}}", f"{name}.{key} must come from .env"


def test_postgres_is_healthchecked_and_credentials_come_from_env(raw_compose: dict) -> None:
    postgres = raw_compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["environment"] == {
        "POSTGRES_USER": "${POSTGRES_USER}",
        "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD}",
        "POSTGRES_DB": "${POSTGRES_DB}",
    }
    assert "ports" not in postgres, "the database needs no host port: services reach it by name"
    assert any(v.startswith("postgres-data:") for v in postgres["volumes"])


def test_worker_reserves_gpus_and_can_scale(raw_compose: dict) -> None:
    worker = raw_compose["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert all("container_name" not in service for service in raw_compose["services"].values())


def test_web_uis_are_published_on_loopback_only(compose: dict) -> None:
    for name in ("mlflow", "dashboard"):
        ports = compose["services"][name]["ports"]
        assert ports and all(str(port).startswith("127.0.0.1:") for port in ports), f"{name}: {ports}"


def test_env_example_defines_every_variable_the_compose_file_uses() -> None:
    defined = read_env_example()
    used = {match["name"] for match in VARIABLE.finditer(COMPOSE.read_text())}
    assert used, "the compose file references no variable"
    assert sorted(used - set(defined)) == []
    assert ".env" in (REPO_ROOT / ".gitignore").read_text().split()


def test_dockerfile_uses_a_cuda_pytorch_base_and_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M)[1]
    tag = re.fullmatch(r"pytorch/pytorch:(?P<torch>[\d.]+)-cuda(?P<cuda>[\d.]+)-cudnn\d+-(runtime|devel)", base)
    assert tag, f"base image {base!r} is not a CUDA build of pytorch/pytorch"
    # The image's torch must satisfy the project's range, or `pip install .` would replace it.
    from packaging.specifiers import SpecifierSet

    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    torch_range = re.search(r'"torch(?P<spec>[<>=!~][^"]*)"', pyproject)["spec"]
    assert tag["torch"] in SpecifierSet(torch_range)
    assert re.search(r"^RUN pip install \.", text, re.M)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["ecgsearch"\]', text, re.M)
