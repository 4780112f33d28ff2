"""Serving optuna-dashboard on the study storage, with a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import ipaddress
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from socketserver import ThreadingMixIn
from types import FrameType
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
import optuna_dashboard


class _ThreadedWSGIServer(ThreadingMixIn, WSGIServer):
    # The browser polls several endpoints at once; one thread per request keeps the page live.
    daemon_threads = True


class _QuietRequestHandler(WSGIRequestHandler):
    # The dashboard polls every few seconds: one log line per request would bury everything else.
    def log_message(self, format: str, *args: object) -> None:
        pass


def is_loopback(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # A host name: loopback only if every address it resolves to is.
        try:
            addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except OSError:
            return False
        return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def dashboard_url(host: str, port: int) -> str:
    shown = host
    if host in ("0.0.0.0", "::"):
        # Any interface: the loopback address is the one that surely works from here.
        shown = "127.0.0.1" if host == "0.0.0.0" else "::1"
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/dashboard"


def build_dashboard_app(storage: optuna.storages.BaseStorage, artifact_dir: Path | None = None):
    """The optuna-dashboard WSGI application on `storage` (artifacts from `artifact_dir` if given)."""
    artifact_store = None
    if artifact_dir is not None:
        from optuna.artifacts import FileSystemArtifactStore

        artifact_dir.mkdir(parents=True, exist_ok=True)
        artifact_store = FileSystemArtifactStore(str(artifact_dir))
    return optuna_dashboard.wsgi(storage, artifact_store=artifact_store)


def serve_dashboard(
    storage: optuna.storages.BaseStorage,
    *,
    host: str,
    port: int,
    artifact_dir: Path | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    """Serve until Ctrl-C or SIGTERM, then close the socket and return normally.

    `on_listening(url)` is called once the socket is bound, so the printed URL is one that answers.
    Raises `OSError` when the port cannot be bound.
    """
    app = build_dashboard_app(storage, artifact_dir)
    server = make_server(host, port, app, server_class=_ThreadedWSGIServer, handler_class=_QuietRequestHandler)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so it must run outside the serving thread.
        if not stopping.is_set():
            stopping.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    # `docker compose stop` sends SIGTERM: treat it like Ctrl-C so the container exits 0.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if on_listening is not None:
            on_listening(dashboard_url(host, server.server_address[1]))
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
