"""Shared fixtures: the real MIT-BIH data (prepared once per session) and small real slices of it, a fresh
PostgreSQL database per test, study definitions, `start` arguments, and the real CLI parser.

Tests that need PostgreSQL or the MIT-BIH files skip when these are absent; with
`ECGSEARCH_REQUIRE_SERVICES=1` (set by `.ci/run`, where both are there) they fail instead, so a broken
service shows up as a failure rather than as a quiet skip.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import retrained_study
import study_fixtures

REPO_ROOT = Path(__file__).resolve().parents[1]
MITDB_RAW = Path(os.environ.get("MITDB_DIR", REPO_ROOT.parent / "shared" / "data" / "mitdb"))
PG_HOST = os.environ.get("ECGSEARCH_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ECGSEARCH_TEST_PG_PORT", "5432"))
PG_ADMIN_USER = os.environ.get("ECGSEARCH_TEST_PG_USER", "postgres")
REQUIRE_SERVICES = os.environ.get("ECGSEARCH_REQUIRE_SERVICES", "").strip() not in ("", "0")

# Two cores in CI: intra-op threads beyond that only add contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def service_missing(reason: str) -> None:
    """Skip the test, or fail it where the services are required (CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"ECGSEARCH_REQUIRE_SERVICES is set but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def mitdb_raw_dir() -> Path:
    if not (MITDB_RAW / "100.hea").exists():
        service_missing(
            f"real MIT-BIH records not found in {MITDB_RAW} (set MITDB_DIR, or place the PhysioNet "
            "mitdb 1.0.0 files in ../shared/data/mitdb)"
        )
    return MITDB_RAW


@pytest.fixture(scope="session")
def mitdb_prepared_dir(mitdb_raw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole database converted once per test session (six-file layout + meta.json)."""
    from search.data import prepare_mitdb

    out = tmp_path_factory.mktemp("mitdb_prepared")
    prepare_mitdb(mitdb_raw_dir, out)
    return out


@pytest.fixture(scope="session")
def small_real_dir(mitdb_prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real slice (both classes in every split) in the six-file layout, for fast tests."""
    from search.data import load_dataset

    out = tmp_path_factory.mktemp("mitdb_small")
    load_dataset(mitdb_prepared_dir).subset(max_train=96, max_val=48, max_test=48, seed=0).save(out)
    return out


@pytest.fixture(scope="session")
def tiny_real_dir(mitdb_prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An even smaller real slice for searches with many trials."""
    from search.data import load_dataset

    out = tmp_path_factory.mktemp("mitdb_tiny")
    load_dataset(mitdb_prepared_dir).subset(max_train=48, max_val=32, max_test=32, seed=1).save(out)
    return out


def _postgres_reachable(timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=timeout_s):
            return True
    except OSError:
        return False


def _admin_connection() -> Any:
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_ADMIN_USER, dbname="postgres", autocommit=True, connect_timeout=5
    )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """`postgresql+psycopg://…` URL of a database created for this test on the local server and dropped after it."""
    if not _postgres_reachable():
        service_missing(
            f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT} (start it, e.g. "
            "`pg_ctlcluster 15 main start`, or set ECGSEARCH_TEST_PG_HOST/PORT)"
        )
    name = f"ecgsearch_test_{uuid.uuid4().hex[:16]}"
    with _admin_connection() as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG_ADMIN_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with _admin_connection() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one folder per test session where the cached small study and its bundles live."""
    return retrained_study.shared_root(tmp_path_factory)


@pytest.fixture
def make_definition() -> Callable[..., Any]:
    """`make_definition(**changes)`: a study definition without real data, overriding only what a test is about."""
    return study_fixtures.make_definition


@pytest.fixture(scope="session")
def start_args() -> Callable[..., list[str]]:
    """`start_args(data, storage, *extra, mlflow_uri="off")`: `ecgsearch start` arguments for a test."""
    return study_fixtures.start_args


@pytest.fixture
def parse_command() -> Callable[[list[str]], tuple[str, dict[str, Any]]]:
    """Parse `ecgsearch ARGV` with the real click CLI without running it: (the command's path, its params).

    Raises click's UsageError for an unknown command or flag, or a bad value.
    """
    import click

    from search.cli import cli

    def parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
        command: click.Command = cli
        ctx = cli.make_context("ecgsearch", list(argv))
        path = []
        while isinstance(command, click.Group):
            # A group keeps the subcommand's name apart from its arguments, as click's own Group.invoke reads them.
            name, command, rest = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
            path.append(name)
            ctx = command.make_context(name, rest, parent=ctx)
        return " ".join(path), ctx.params

    return parse
