"""`ecgsearch storage-proxy`: Optuna's gRPC storage proxy in front of the study database, for large fleets."""

from __future__ import annotations

import logging

import click

from search.cli.console import out, print_warning
from search.cli.options import example, storage_option

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 13000


@click.command(
    "storage-proxy",
    short_help="serve the study database to many workers through Optuna's gRPC proxy",
    epilog=example(
        "ecgsearch storage-proxy --host 0.0.0.0 --port 13000   # database URL in $ECGSEARCH_STORAGE",
        "ecgsearch worker --study cnn_lstm --storage grpc://proxy-host:13000 --gpus all",
    ),
)
@storage_option
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    help="address to listen on; the proxy has no authentication or TLS, so anything but loopback must be a "
    "private network (a cluster-internal Service)",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True, help="port to listen on"
)
@click.option(
    "--grace-period",
    type=click.IntRange(min=1),
    default=90,
    show_default=True,
    metavar="S",
    help="a trial run through the proxy whose worker wrote no liveness for S seconds is failed and re-queued "
    "(must exceed the workers' --heartbeat-interval)",
)
@click.option(
    "--reap-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    metavar="S",
    help="seconds between two looks at the running trials",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    metavar="N",
    help="how often one configuration is re-queued after its workers died",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    metavar="N",
    help="gRPC server threads (the database pool holds up to 8 connections)",
)
def command(
    storage: str, host: str, port: int, grace_period: int, reap_interval: float, retries: int, threads: int
) -> int:
    """Serve the study database to workers through Optuna's gRPC storage proxy, so hundreds of workers share a
    few database connections: workers, `status` and the dashboard take `--storage grpc://HOST:PORT` and need no
    database password. Optuna's heartbeats do not pass through the proxy; workers behind it write a liveness
    mark every --heartbeat-interval instead, and this process fails a trial whose mark stayed unchanged for
    --grace-period and queues one copy with the same parameters (a killed worker's trial is retried).
    """
    from search.errors import UsageError
    from studies import is_proxy_url, mask_secrets
    from studies.proxied import ProxySettings, serve_proxy

    if is_proxy_url(storage):
        raise UsageError(f"--storage {storage}: the proxy needs the database URL itself, not another proxy")
    if reap_interval >= grace_period:
        raise click.BadParameter(
            f"{reap_interval:g} must be shorter than --grace-period ({grace_period})", param_hint="'--reap-interval'"
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        print_warning(
            f"listening on {host}: the storage proxy has no authentication or TLS; anyone who reaches the port can "
            "read and change every study. Keep it on a private network (in Kubernetes: a ClusterIP Service).",
            stderr=True,
        )
    _log_reaper_to_stderr()
    settings = ProxySettings(host, port, float(grace_period), reap_interval, retries, threads)

    def announce() -> None:
        out.print(f"storage proxy for {mask_secrets(storage)}")
        out.print(f"  workers: --storage grpc://{host}:{port}  (grace period {grace_period} s; Ctrl-C to stop)")

    try:
        serve_proxy(storage, settings, on_start=announce)
    except RuntimeError as error:  # gRPC could not bind the address
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({error}); pick another --port") from None
    return 0


def _log_reaper_to_stderr() -> None:
    """The reaper's lines (a trial failed and re-queued) are this long-running process's log."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("studies.liveness")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
