"""A fresh PostgreSQL database per test on the local server (127.0.0.1:5432, trust auth).

Import the fixture into a test module or a conftest with `from pg_fixtures import postgres_url`
(pytest puts tests/ on sys.path, as it has no __init__.py). Tests using it are skipped, with the
reason, when the server does not answer.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

PG_HOST = os.environ.get("ECGSEARCH_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ECGSEARCH_TEST_PG_PORT", "5432"))
PG_ADMIN_USER = os.environ.get("ECGSEARCH_TEST_PG_USER", "postgres")


def postgres_reachable(timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=timeout_s):
            return True
    except OSError:
        return False


def _admin_connection():
    import psycopg

    return psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_ADMIN_USER, dbname="postgres", autocommit=True, connect_timeout=5
    )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """`postgresql+psycopg://…` URL of a database created for this test and dropped after it."""
    if not postgres_reachable():
        pytest.skip(
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
