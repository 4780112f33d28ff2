"""How ecgsearch talks to MLflow: a client bounded in time, quiet about URLs, and errors without passwords."""

from __future__ import annotations

import math
import os

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from search.errors import EXIT_STORAGE, EcgSearchError
from search.tracking.uri import is_http
from studies import mask_secrets


class TrackingStoreError(EcgSearchError):
    """The MLflow tracking store is unreachable or refused a request; the message names it, masked."""

    exit_code = EXIT_STORAGE


def silence_run_links() -> None:
    """MLflow prints "View run … at: <tracking URI>/…" to stdout whenever a run ends, with the password of a
    `http://user:password@host` URI in it. ecgsearch prints its own links, without credentials
    (`uri.mlflow_run_link`), so MLflow's are switched off in every process that imports `search.tracking`."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def limit_http_retries(timeout_s: float) -> None:
    """MLflow retries a failing request 7 times with exponential backoff (minutes). Where MLflow only
    mirrors (the live mirror, `start`'s setup), a request is tried once and waits at most `timeout_s`: the
    next change, or `mlflow-sync`, completes what it missed."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(timeout_s)))


def tracking_client(tracking_uri: str, *, timeout_s: float | None = None) -> MlflowClient:
    """An MLflow client for `tracking_uri`; with `timeout_s`, requests to a server are tried once, that long."""
    if timeout_s is not None and is_http(tracking_uri):
        limit_http_retries(timeout_s)
    return MlflowClient(tracking_uri=tracking_uri)


def describe_error(error: BaseException, tracking_uri: str) -> str:
    """`Type: message` with every password hidden (MLflow's messages repeat the request URL, credentials
    included)."""
    return mask_secrets(f"{type(error).__name__}: {error}", tracking_uri)


def refused(error: BaseException) -> bool:
    """A request the store refuses (4xx): sending it again cannot succeed, unlike a store that is down."""
    if not isinstance(error, MlflowException):
        return False
    status = error.get_http_status_code()
    return 400 <= status < 500 and status != 429


def store_error(error: BaseException, tracking_uri: str, doing: str) -> TrackingStoreError:
    """A one-paragraph error for the CLI: what was being done, where, and why it failed (all masked)."""
    return TrackingStoreError(
        f"MLflow tracking store {mask_secrets(tracking_uri)}: {doing} failed ({describe_error(error, tracking_uri)}). "
        "Check that the server runs and the URI (--mlflow-uri or $MLFLOW_TRACKING_URI) is right; the study "
        "database keeps everything, so running the command again later completes the mirror."
    )
