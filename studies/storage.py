"""Where studies live: checking the storage URL and opening it with heartbeats.

SQLite is the zero-setup default for one machine; PostgreSQL serves many workers on many
machines. Both go through Optuna's RDBStorage, the only storage with heartbeats (a worker that
dies mid-trial has its trial failed and retried instead of left RUNNING forever).

`grpc://HOST:PORT` is Optuna's storage proxy (`ecgsearch storage-proxy`) in front of such a database:
many workers share its few connections. Optuna's heartbeats do not pass through it, so workers behind it
write ecgsearch's own liveness mark instead and the proxy fails and retries silent trials
(`studies.liveness`).
"""

from __future__ import annotations

import sqlite3
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import optuna
import sqlalchemy
import sqlalchemy.exc
from sqlalchemy.engine import URL, make_url

from studies.masking import mask_secrets

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

DEFAULT_STORAGE_URL = "sqlite:///ecgsearch.db"

# A bare `postgresql://` means psycopg2 under SQLAlchemy 2.x, which is not installed (STACK.md).
_POSTGRES_DRIVER = "postgresql+psycopg"
_SUPPORTED_DRIVERS = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
    "postgresql": _POSTGRES_DRIVER,
    "postgresql+psycopg": _POSTGRES_DRIVER,
}
_EXPECTED_SHAPES = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db, postgresql+psycopg://user:password@host:5432/database "
    "or grpc://host:port (an `ecgsearch storage-proxy`)"
)
PROXY_SCHEME = "grpc"
# How long a worker waits for the storage proxy to answer before giving up (a pod may start before it).
PROXY_CONNECT_TIMEOUT_S = 30.0

# Each worker process uses one connection for trials and one for its heartbeat thread; a few
# spare ones cover the sampler's reads without letting many workers exhaust max_connections.
POSTGRES_POOL_SIZE = 4
POSTGRES_MAX_OVERFLOW = 4
# Recycle before common server/proxy idle timeouts; pre-ping catches connections dropped anyway.
POSTGRES_POOL_RECYCLE_S = 1800
POSTGRES_CONNECT_TIMEOUT_S = 10
# Several local processes share one SQLite file: wait for its lock rather than fail at once.
SQLITE_BUSY_TIMEOUT_S = 60


class StorageError(Exception):
    """The study storage cannot be used; the message names the masked URL and what to do."""

    exit_code = 4  # search.errors.EXIT_STORAGE (studies cannot import search)


def normalise_storage_url(url: str) -> URL:
    """The parsed URL with the driver this installation has; `StorageError` for anything else."""
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:
        raise StorageError(
            f"Storage URL {mask_secrets(url, url)!r} is not a database URL ({mask_secrets(str(error), url)}). "
            f"Expected {_EXPECTED_SHAPES}; pass it with --storage or $ECGSEARCH_STORAGE."
        ) from None
    driver = _SUPPORTED_DRIVERS.get(parsed.drivername)
    if driver is None:
        raise StorageError(
            f"Storage URL {mask_secrets(url)!r} uses {parsed.drivername!r}, which ecgsearch does not "
            f"support. Expected {_EXPECTED_SHAPES} (sqlite for one machine, PostgreSQL through "
            "psycopg 3 for many workers)."
        )
    return parsed.set(drivername=driver)


def open_storage(
    url: str,
    *,
    heartbeat_interval: int = 30,
    grace_period: int = 90,
    retries: int = 3,
) -> BaseStorage:
    """An RDBStorage with heartbeats: a trial silent for `grace_period` s is failed and re-queued.

    `retries` bounds how often one configuration is re-queued after its worker died, with the
    epochs it had already reported (so the pruner still sees them). A `grpc://` URL gives a client of
    the storage proxy instead, whose own reaper applies its grace period and retries.
    """
    if is_proxy_url(url):
        return open_proxy(url)
    if heartbeat_interval <= 0 or grace_period <= heartbeat_interval:
        raise ValueError(
            f"heartbeat_interval must be > 0 and grace_period > heartbeat_interval (seconds); "
            f"got heartbeat_interval={heartbeat_interval}, grace_period={grace_period}"
        )
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    parsed = normalise_storage_url(url)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    # An in-memory database lives in its one connection: no WAL, and no disposing of its pool.
    is_sqlite_file = is_sqlite and parsed.database not in (None, "", ":memory:")
    if is_sqlite:
        _check_sqlite_location(parsed, url)
    if is_sqlite_file:
        _use_write_ahead_log(parsed.database, url)
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    else:
        engine_kwargs = {
            "pool_size": POSTGRES_POOL_SIZE,
            "max_overflow": POSTGRES_MAX_OVERFLOW,
            "pool_pre_ping": True,
            "pool_recycle": POSTGRES_POOL_RECYCLE_S,
            "connect_args": {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S},
        }
    try:
        storage = _rdb_storage(
            parsed.render_as_string(hide_password=False),
            engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            retries=retries,
        )
    except sqlalchemy.exc.SQLAlchemyError as error:
        raise StorageError(_connection_failure_message(parsed, url, error)) from None
    except RuntimeError as error:  # Optuna's schema-version check
        raise StorageError(
            f"Storage {mask_secrets(url)!r} holds an Optuna schema this version cannot use "
            f"({mask_secrets(str(error), url)}). Run `optuna storage upgrade --storage URL` with "
            "the Optuna version every worker runs, or point --storage at a new database."
        ) from None
    if is_sqlite_file:
        _lock_sqlite_transactions_at_begin(storage.engine)
    _count_main_thread_connections(storage.engine)
    return storage


class _MainThreadConnections:
    """How many study-storage connections the main thread has checked out of their pools right now."""

    count = 0


def main_thread_holds_storage_connection() -> bool:
    """Whether the main thread is between taking a study-storage connection and handing it back.

    A Ctrl-C handler raising KeyboardInterrupt in there can stop the driver between BEGIN and the pool's
    rollback, or inside the pool's own bookkeeping, and leave a connection holding SQLite's write lock;
    the worker's handler keeps such an interrupt until the connection is back (search.interrupts).
    """
    return _MainThreadConnections.count > 0


def _count_main_thread_connections(engine: sqlalchemy.engine.Engine) -> None:
    def on_main_thread() -> bool:
        return threading.current_thread() is threading.main_thread()

    @sqlalchemy.event.listens_for(engine, "checkout")
    def _taken(_dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if on_main_thread():
            _MainThreadConnections.count += 1

    @sqlalchemy.event.listens_for(engine, "checkin")
    def _handed_back(_dbapi_connection: Any, _record: Any) -> None:
        # A connection the garbage collector returns from another thread leaves the count high: an
        # interrupt is then kept until the next batch instead of raised, never lost.
        if on_main_thread():
            _MainThreadConnections.count = max(0, _MainThreadConnections.count - 1)


def _lock_sqlite_transactions_at_begin(engine: sqlalchemy.engine.Engine) -> None:
    """Make every transaction on `engine` take SQLite's write lock when it begins (BEGIN IMMEDIATE).

    Optuna claims a queued trial by reading it `FOR UPDATE` and setting it RUNNING only if it was still
    WAITING. SQLite ignores `FOR UPDATE`, and pysqlite starts a transaction only at the first write, so two
    processes could both read WAITING and both run the same trial (one then dies on "Cannot tell a
    COMPLETE trial"). Taking the lock at BEGIN makes that read-then-write one step, as PostgreSQL's row lock
    does; WAL still lets readers outside the engine (status, dashboard) read meanwhile.
    """

    @sqlalchemy.event.listens_for(engine, "connect")
    def _leave_begin_to_sqlalchemy(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite's own deferred BEGIN would come first otherwise

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection: sqlalchemy.engine.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    # Connections Optuna opened while creating the schema predate the listeners: open new ones.
    engine.dispose()


def open_existing_storage(url: str, *, heartbeat_interval: int = 30, grace_period: int = 90) -> BaseStorage:
    """`open_storage` for a storage that must already exist: a missing SQLite file is an error, not created.

    Commands that read or join studies (status, report, dashboard, worker) pointed at a wrong path would
    otherwise create an empty database and show nothing, which looks like lost studies.
    """
    if is_proxy_url(url):
        return open_proxy(url)
    parsed = normalise_storage_url(url)
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database not in (None, "", ":memory:"):
        path = Path(database).expanduser()
        if not path.is_file():
            raise StorageError(
                f"Storage {mask_secrets(url)!r}: the SQLite file {path.resolve()} does not exist. Pass the "
                "database the studies live in with --storage (or $ECGSEARCH_STORAGE), or run the command from "
                "the folder where `ecgsearch start` created ecgsearch.db."
            )
    return open_storage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)


def is_proxy_url(url: str) -> bool:
    """Whether `url` names an `ecgsearch storage-proxy` (grpc://host:port) rather than a database."""
    return url.strip().lower().startswith(f"{PROXY_SCHEME}://")


def proxy_address(url: str) -> tuple[str, int]:
    """(host, port) of a `grpc://host:port` URL; `StorageError` when either is missing or malformed."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None or parts.path not in ("", "/") or parts.username or parts.query:
        raise StorageError(
            f"Storage URL {mask_secrets(url)!r} is not a storage proxy address. Expected grpc://host:port, e.g. "
            "grpc://storage-proxy:13000 (the proxy holds the database URL; workers need only its address)."
        )
    return host, port


def open_proxy(url: str, *, timeout_s: float = PROXY_CONNECT_TIMEOUT_S) -> BaseStorage:
    """A client of the storage proxy at `url`, once it answers; `StorageError` when it does not."""
    host, port = proxy_address(url)
    try:
        import grpc  # noqa: F401  (Optuna imports it lazily; a missing one is a setup problem, said here)
    except ImportError:
        raise StorageError(
            f"Storage {url!r} is a gRPC storage proxy, but grpcio is not installed: pip install grpcio protobuf"
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=timeout_s)
    except ConnectionError:
        proxy.close()
        raise StorageError(
            f"Storage proxy {url!r} did not answer within {timeout_s:g} s. Is `ecgsearch storage-proxy` running "
            f"and reachable on {host}:{port} from this machine?"
        ) from None
    return proxy


def _rdb_storage(
    url: str, engine_kwargs: dict[str, Any], *, heartbeat_interval: int, grace_period: int, retries: int
) -> optuna.storages.RDBStorage:
    with warnings.catch_warnings():
        # Heartbeats and their retry callback are why this storage is used; not news to a user.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=retries, inherit_intermediate_values=False
            ),
        )


def _check_sqlite_location(parsed: URL, url: str) -> None:
    database = parsed.database
    if database in (None, "", ":memory:"):
        return
    folder = Path(database).expanduser().resolve().parent
    if not folder.is_dir():
        raise StorageError(
            f"Storage URL {mask_secrets(url)!r} points at a SQLite file in {folder}, which does not "
            f"exist. Create the folder (mkdir -p {folder}) or pass another --storage, e.g. "
            f"{DEFAULT_STORAGE_URL} for the working directory."
        )


def _use_write_ahead_log(database: str, url: str) -> None:
    # WAL lets readers (status, dashboard) work while a worker writes. It is a property of the
    # file, so it is set once, outside SQLAlchemy, whose implicit transaction would swallow it.
    try:
        connection = sqlite3.connect(database, timeout=SQLITE_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise StorageError(
            f"Could not open the SQLite study storage {mask_secrets(url)!r}: {error}. Expected a "
            "SQLite database file (or a path where one can be created)."
        ) from None


def _connection_failure_message(parsed: URL, url: str, error: Exception) -> str:
    masked = mask_secrets(url)
    detail = mask_secrets(str(getattr(error, "orig", None) or error).strip().splitlines()[0], url)
    if parsed.get_backend_name() == "sqlite":
        return (
            f"Could not open the SQLite study storage {masked!r}: {detail}. Expected a writable "
            "SQLite database file (or a path where one can be created)."
        )
    host = parsed.host or "localhost"
    port = parsed.port or 5432
    user = parsed.username or "postgres"
    database = parsed.database or user
    lowered = detail.lower()
    if "does not exist" in lowered and "database" in lowered:
        hint = (
            f"The server answered but database {database!r} does not exist: create it with "
            f"`createdb -h {host} -p {port} -U {user} {database}`."
        )
    elif "authentication" in lowered or "password" in lowered:
        hint = f"Check the user name and password for {user!r} (the password is not shown here)."
    else:
        hint = (
            f"Is PostgreSQL running on {host}:{port} and reachable from this machine? "
            f"(Then create the database with `createdb -h {host} -p {port} -U {user} {database}`.)"
        )
    return f"Could not open the PostgreSQL study storage {masked!r}: {detail}. {hint}"


def sqlite_artifact_dir(storage_url: str) -> str | None:
    """`optuna-artifacts` beside the database file of a `sqlite:///FILE` URL (where a study's Optuna artifacts
    live by default); None for any other URL."""
    prefix = "sqlite:///"
    path = storage_url[len(prefix) :] if storage_url.startswith(prefix) else ""
    if path in ("", ":memory:"):
        return None
    return str(Path(path).resolve().parent / "optuna-artifacts")
