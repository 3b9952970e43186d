"""Ops commands and the CLI's own observability: ``crd flower``, producer set-up.

Cheap to import (the ``crd`` group imports it): heavy modules load inside functions.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import click

from redundancy.errors import ConfigurationError

log = logging.getLogger(__name__)


def start_producer(ctx: click.Context, log_level: str, correlation_id: str | None) -> None:
    """Logging, one correlation id for everything this command sends, metrics push; on
    a cluster, the broker and a worker must answer first (one line and exit 1 if not)."""
    from redundancy.config import get_settings
    from redundancy.observability.context import correlation_scope
    from redundancy.observability.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_format, log_level)
    cid = ctx.with_resource(correlation_scope(correlation_id))
    log.info("correlation id %s", cid)
    if settings.prometheus_pushgateway:
        gateway = settings.prometheus_pushgateway
        ctx.call_on_close(lambda: push_metrics(gateway, ctx.invoked_subcommand or "crd"))
    if not settings.embedded:
        from redundancy.batch.runner import release_all
        from redundancy.cli.cluster import ensure_cluster
        from redundancy.workers import app

        ctx.call_on_close(lambda: release_all(app))
        ensure_cluster(app)


def push_metrics(gateway: str, command: str) -> None:
    """Add this run's counters to the Pushgateway; a failure is a warning, not an error."""
    from redundancy.observability.metrics import push_to_gateway

    try:
        push_to_gateway(
            gateway, job="crd", grouping_key={"instance": socket.gethostname(), "command": command}
        )
    except Exception as exc:
        log.warning("could not push metrics to %s: %s: %s", gateway, type(exc).__name__, exc)


def check_port_free(address: str, port: int) -> None:
    """Fail at start, naming the option, when the metrics port cannot be bound."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            raise ConfigurationError(
                f"--metrics-port/WORKER_METRICS_PORT: cannot listen on {address}:{port} ({exc})"
            ) from None


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="interface to listen on (0.0.0.0 in a container)",
)
@click.option(
    "--no-auth",
    is_flag=True,
    help="run without FLOWER_BASIC_AUTH (only on a trusted, local network)",
)
@click.pass_context
def flower(ctx: click.Context, port: int, address: str, no_auth: bool) -> None:
    """Flower, Celery's web monitor, on our app (extra arguments go to Flower).

    Basic auth comes from FLOWER_BASIC_AUTH=user:password[,user:password], which Flower
    reads itself (never on the command line, where `ps` would show it).
    """
    from redundancy.config import get_settings

    settings = get_settings()
    settings.require_broker("Flower watches the workers of a broker")
    if not settings.flower_basic_auth and not no_auth:
        raise ConfigurationError(
            "FLOWER_BASIC_AUTH is not set (user:password[,user:password]); Flower shows task "
            "arguments and results and can revoke tasks, so it requires a login "
            "(or pass --no-auth on a trusted network)"
        )
    try:
        import flower as _flower  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "Flower is not installed: pip install 'content-redundancy-detector[flower]'"
        ) from None
    if settings.log_format == "json":
        from redundancy.observability.logs import configure_logging

        configure_logging("json", "INFO")  # Flower (tornado) keeps a handler it finds
    from redundancy.workers import app

    # Workers send task events only when asked (worker_send_task_events is off): ask the
    # running ones now, before the first request; Flower itself asks every 5 s after.
    try:
        app.control.enable_events()
    except Exception as exc:  # the broker is down: Flower says so itself
        log.warning("could not ask the workers for task events: %s", exc)
    argv: list[Any] = ["flower", f"--port={port}", f"--address={address}", *ctx.args]
    app.start(argv)
