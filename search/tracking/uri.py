"""Where the mirror writes: tracking URI resolution, local artifact folders, and a cheap reachability probe."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from studies import mask_secrets
from studies.masking import MASK

OFF = "off"
DEFAULT_DB_NAME = "mlflow.db"
ARTIFACTS_DIR_NAME = "mlartifacts"

_SQLITE_PREFIX = "sqlite:///"


def resolve_tracking_uri(flag_value: str | None, storage_url: str, stored: str | None = None) -> str | None:
    """The one answer to "where does this study's MLflow side live?"; reads no environment variable.

    `flag_value` (the CLI passes `--mlflow-uri`, else `$MLFLOW_TRACKING_URI`), else `stored` (the URI the
    study was set up with) unless it was stored masked (its password is gone; the credentials must come
    from the flag or the environment), else `sqlite:///mlflow.db` beside the study database: the folder
    of a SQLite study file, the working directory for any other storage. `off` gives None (no mirror).
    """
    for value, from_study in ((flag_value, False), (stored, True)):
        value = (value or "").strip()
        if not value or (from_study and is_masked(value)):
            continue
        return None if value.lower() == OFF else value
    return f"{_SQLITE_PREFIX}{(_study_db_folder(storage_url) / DEFAULT_DB_NAME).resolve()}"


def is_masked(uri: str) -> bool:
    """A URI whose password `studies.mask_secrets` replaced: unusable for connecting."""
    return MASK in uri


def same_store(tracking_uri: str, stored: str | None) -> bool:
    """Whether `tracking_uri` is the store a study's experiment and parent run ids belong to (the study
    keeps that URI masked, so the comparison is made masked)."""
    return stored is not None and mask_secrets(tracking_uri) == stored


def _study_db_folder(storage_url: str) -> Path:
    path = sqlite_path(storage_url)
    return path.parent if path is not None else Path.cwd()


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///…` URL (any SQLAlchemy driver suffix), None for memory or other backends."""
    match = re.match(r"^sqlite(\+\w+)?:///(.*)$", url)
    if not match:
        return None
    database = match.group(2).split("?", 1)[0]
    if not database or database == ":memory:":
        return None
    return Path(database)


def artifact_location(tracking_uri: str, study_name: str) -> str | None:
    """For a local SQLite store: `mlartifacts/<study>` beside the database, as a file URI.

    None for servers and other stores, which choose their own artifact root.
    """
    path = sqlite_path(tracking_uri)
    if path is None:
        return None
    slug = re.sub(r"[^\w.-]+", "_", study_name).strip("._") or "study"
    return (path.resolve().parent / ARTIFACTS_DIR_NAME / slug).as_uri()


def is_http(tracking_uri: str) -> bool:
    return urlsplit(tracking_uri).scheme in ("http", "https")


def http_reachable(tracking_uri: str, timeout_s: float) -> bool:
    """A TCP connect to the server: fails in well under a second when nothing listens (or times out)."""
    parts = urlsplit(tracking_uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def mlflow_run_link(tracking_uri: str | None, experiment_id: str | None, run_id: str) -> str | None:
    """`<uri>/#/experiments/<exp>/runs/<run>` for an MLflow server; None for a local store."""
    if not tracking_uri or not experiment_id:
        return None
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return None
    # Credentials in the URI would end up in every link (and the URI is stored masked anyway).
    netloc = parts.netloc.rsplit("@", 1)[-1]
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"
