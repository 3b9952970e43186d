"""``crd doctor``: one line per configured service saying what is wrong, if anything.

Checks are plain functions in ``CHECKS``; each returns ``(ok, detail)`` or ``None`` when
the service is not configured. Other parts of the project append their own checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape

from redundancy import resources
from redundancy.config import Settings, get_settings
from redundancy.kv.clients import sanitize

CheckResult = tuple[bool, str] | None
Check = Callable[[Settings], CheckResult]
TIMEOUT = 3.0


def _redis_ping(url: str, variable: str) -> tuple[bool, str]:
    client = resources.redis_client(url, resources.Role.JOBS, timeout=TIMEOUT)
    try:
        started = time.perf_counter()
        client.ping()
        return True, f"{sanitize(url)} answers ({(time.perf_counter() - started) * 1000:.1f} ms)"
    except Exception as exc:
        return (
            False,
            f"{sanitize(url)} unreachable ({type(exc).__name__}: {exc}); check {variable}",
        )
    finally:
        client.close()


def check_mode(s: Settings) -> CheckResult:
    if s.embedded:
        return True, "CELERY_BROKER_URL unset: embedded default, jobs run in-process"
    return True, f"cluster mode, broker {sanitize(s.broker_url or '')}"


def cluster_only(check: Check) -> Check:
    """``check`` of what only a cluster has (a broker, workers, an outbox); the embedded
    default has none of them, so it is not shown there."""

    def on_a_cluster(s: Settings) -> CheckResult:
        return None if s.embedded else check(s)

    return on_a_cluster


def check_broker(s: Settings) -> CheckResult:
    from redundancy.workers import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=TIMEOUT)
        return True, f"{sanitize(s.broker_url or '')} accepts connections"
    except Exception as exc:
        return False, (
            f"{sanitize(s.broker_url or '')} unreachable ({type(exc).__name__}: {exc}); "
            "check CELERY_BROKER_URL and that the server runs"
        )


def check_backend(s: Settings) -> CheckResult:
    if not s.result_backend_url:
        return None
    return _redis_ping(s.result_backend_url, "CELERY_RESULT_BACKEND")


def check_workers(s: Settings) -> CheckResult:
    from redundancy.workers import app

    try:
        replies = app.control.ping(timeout=1.0)
    except Exception as exc:
        return False, f"cannot ask workers ({type(exc).__name__}: {exc})"
    if not replies:
        return False, "no worker answered: start one with `crd worker`"
    names = sorted(name for reply in replies for name in reply)
    return True, f"{len(names)} answered: {', '.join(names)}"


def check_cache(s: Settings) -> CheckResult:
    if not s.cache_url:
        return True, (
            "in-memory, per process (set REDIS_CACHE_URL to share results between workers)"
            if not s.embedded
            else "in-memory (embedded default)"
        )
    variable = "REDIS_CACHE_URL" if s.redis_cache_url else "REDIS_URL"
    ok, detail = _redis_ping(s.cache_url, variable)
    if ok and not s.cache_results:
        detail += "; CACHE_RESULTS=false: tasks do not use it"
    return ok, detail


def check_sessions(s: Settings) -> CheckResult:
    if not s.sessions_url:
        return None if not s.embedded else (True, "in-memory (embedded default)")
    return _redis_ping(s.sessions_url, "REDIS_URL")


def check_event_broker(s: Settings) -> CheckResult:
    if not s.events_enabled:
        return True, "EVENTS_ENABLED=false: no events are emitted"
    from redundancy.events.brokers import broker_from_settings

    broker = broker_from_settings(publish_timeout=TIMEOUT)
    if broker.kind == "memory":
        return True, "in-memory (events stay in the process that ran the job)"
    variable = {"kafka": "KAFKA_BOOTSTRAP_SERVERS", "rabbitmq": "RABBITMQ_URL"}.get(
        broker.kind, "REDIS_URL"
    )
    try:
        started = time.perf_counter()
        broker.connect_sync()
        took = (time.perf_counter() - started) * 1000
        return True, f"{broker.describe()} answers ({took:.0f} ms)"
    except Exception as exc:
        return False, (
            f"{broker.describe()} unreachable ({type(exc).__name__}: {exc}); check "
            f"MESSAGE_BROKER_TYPE and {variable}; events wait in the outbox meanwhile"
        )
    finally:
        broker.disconnect_sync()


def check_outbox(s: Settings) -> CheckResult:
    if not s.events_enabled:
        return None
    from redundancy.events.outbox import get_outbox

    outbox = get_outbox()
    backlog, age, dead = outbox.backlog(), outbox.oldest_age(), outbox.dead_letters()
    detail = f"{backlog} events waiting" + (f", oldest {age:.0f} s" if age is not None else "")
    if dead:
        detail += f", {dead} dead letters (see `crd events status`)"
    return True, detail


def check_tracing(s: Settings) -> CheckResult:
    """The OTLP endpoint accepts connections (spans are sent over HTTP to it)."""
    if not s.otel_exporter_otlp_endpoint:
        return None
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(s.otel_exporter_otlp_endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=TIMEOUT):
            return True, f"OTLP endpoint {s.otel_exporter_otlp_endpoint} accepts connections"
    except OSError as exc:
        return False, (
            f"OTLP endpoint {s.otel_exporter_otlp_endpoint} unreachable ({exc}); "
            "check OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/HTTP, usually port 4318)"
        )


CHECKS: list[tuple[str, Check]] = [
    ("mode", check_mode),
    ("broker", cluster_only(check_broker)),
    ("result backend", cluster_only(check_backend)),
    ("workers", cluster_only(check_workers)),
    ("cache", check_cache),
    ("sessions", check_sessions),
    ("event broker", check_event_broker),
    ("event outbox", cluster_only(check_outbox)),
    ("tracing", check_tracing),
]


def run_checks(console: Console, checks: list[tuple[str, Check]] | None = None) -> bool:
    """Print one line per check; True when nothing failed."""
    try:
        settings = get_settings()
    except Exception as exc:
        console.print(f"[red]✗ settings[/]  {escape(str(exc))}", soft_wrap=True)
        return False
    console.print("[green]✓ settings[/]  environment parsed")
    healthy = True
    for name, check in checks or CHECKS:
        try:
            outcome: Any = check(settings)
        except Exception as exc:
            outcome = (False, f"{type(exc).__name__}: {exc}")
        if outcome is None:
            continue
        ok, detail = outcome
        healthy &= ok
        mark = "[green]✓" if ok else "[red]✗"
        console.print(f"{mark} {name}[/]  {escape(detail)}", soft_wrap=True)
    return healthy
