"""``crd events``: tail the configured event broker, run event handlers and the outbox
relay, show the backlog and the dead letters."""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any

import click

from redundancy.errors import ConfigurationError, RedundancyError


@click.group()
def events() -> None:
    """Domain events: tail them, handle them, relay the outbox, show its backlog."""


def _broker() -> Any:
    from redundancy.config import get_settings
    from redundancy.events.brokers import broker_from_settings

    broker = broker_from_settings()
    if broker.kind == "memory" and not get_settings().embedded:
        raise ConfigurationError("MESSAGE_BROKER_TYPE=memory keeps events inside one process")
    if broker.kind == "memory":
        raise ConfigurationError(
            "no event broker to read: events of the embedded default live inside the process "
            "that ran the job. Set MESSAGE_BROKER_TYPE (redis_streams, rabbitmq or kafka) and "
            "REDIS_URL, RABBITMQ_URL or KAFKA_BOOTSTRAP_SERVERS."
        )
    return broker


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


@events.command()
@click.option(
    "--type",
    "-t",
    "types",
    multiple=True,
    help="only these event types (repeatable), e.g. analysis.completed",
)
@click.option(
    "--group",
    "-g",
    default=None,
    help="read as this consumer group (acknowledged; resumes where it stopped)",
)
@click.option("--from-beginning", is_flag=True, help="without --group: start at the oldest event")
@click.option("--max", "max_events", type=int, default=None, help="stop after N events")
@click.option("--timeout", type=float, default=None, help="stop after N seconds without events")
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="drop events without a valid signature (needs EVENTS_SIGNING_KEY); --no-verify "
    "prints unsigned events too",
)
def tail(
    types: tuple[str, ...],
    group: str | None,
    from_beginning: bool,
    max_events: int | None,
    timeout: float | None,
    verify: bool,
) -> None:
    """Print events from the configured broker as JSON lines (one envelope per line)."""
    from redundancy.events.wire import configured_signing_keys

    if verify and not configured_signing_keys():
        raise click.UsageError(
            "events are verified by default and EVENTS_SIGNING_KEY is not set: set it, or "
            "pass --no-verify to print unsigned (unauthenticated) events"
        )
    broker = _broker()

    def show(event: Any) -> None:
        click.echo(event.model_dump_json())
        sys.stdout.flush()

    try:
        broker.consume_sync(
            show,
            group=group,
            event_types=types or None,
            max_events=max_events,
            timeout=timeout,
            from_beginning=from_beginning,
            verify=verify,
            stop=_stop_on_signals(),
        )
    except RedundancyError:
        raise
    except Exception as exc:  # a client library's error: one line, not a traceback
        from redundancy.events.errors import BrokerUnavailableError

        raise BrokerUnavailableError(f"{broker.describe()}: {type(exc).__name__}: {exc}") from exc
    finally:
        broker.disconnect_sync()


@events.command()
@click.option("--drain", is_flag=True, help="relay what is waiting, then exit")
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="with --drain: give up after this many seconds",
)
def relay(drain: bool, timeout: float) -> None:
    """Relay the outbox to the event broker (workers do this too unless
    EVENTS_RELAY_IN_WORKER=false). Several relays may run: one works, the others stand by.
    The same as ``python -m redundancy.events.relay``."""
    from redundancy.events.relay import serve

    left = serve(drain=drain, timeout=timeout)
    sys.exit(0 if left == 0 else 1)


@events.command()
def status() -> None:
    """The outbox backlog, the age of its oldest event and the dead letters, as JSON."""
    from redundancy.events.brokers import broker_url
    from redundancy.events.outbox import get_outbox

    outbox = get_outbox()
    age = outbox.oldest_age()
    from redundancy.kv.clients import sanitize

    click.echo(
        json.dumps(
            {
                "broker": sanitize(broker_url()),
                "outbox_durable": outbox.durable,
                "backlog": outbox.backlog(),
                "oldest_age_seconds": None if age is None else round(age, 3),
                "dead_letters": outbox.dead_letters(),
            }
        )
    )


@events.command()
@click.option(
    "--module",
    "-m",
    "modules",
    multiple=True,
    help="import this module's handlers too (repeatable; it must be importable)",
)
@click.option(
    "--group",
    "-g",
    default="crd-handlers",
    show_default=True,
    help="processes of one group share the events (each handler: group <group>.<handler>)",
)
@click.option("--only", multiple=True, help="run only this handler (repeatable)")
@click.option(
    "--consumer",
    default=None,
    help="this process's name in the groups (default host-pid); restarted under the same "
    "name, it resumes its unacknowledged events at once",
)
@click.option("--max", "max_events", type=int, default=None, help="stop after N events")
@click.option("--timeout", type=float, default=None, help="stop after N seconds without events")
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="handle only events with a valid signature (needs EVENTS_SIGNING_KEY)",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="serve this process's metrics (redundancy_event_handler_total ...) on "
    "http://ADDRESS:PORT/metrics",
)
@click.option("--metrics-address", default="127.0.0.1", show_default=True)
@click.option("--list", "list_only", is_flag=True, help="print the handlers (JSON lines), exit")
def handle(
    modules: tuple[str, ...],
    group: str,
    only: tuple[str, ...],
    consumer: str | None,
    max_events: int | None,
    timeout: float | None,
    verify: bool,
    metrics_port: int | None,
    metrics_address: str,
    list_only: bool,
) -> None:
    """Run event handlers: the built-in ones (corpus-projector, webhook-notifier) and
    those of --module. Each event is handled once per group, retried with back-off,
    then dead-lettered (``crd events dead-letters``)."""
    from redundancy.events.brokers import broker_from_settings
    from redundancy.events.claims import handler_state
    from redundancy.events.handlers import NAME, load
    from redundancy.events.handling import HandlerRunner
    from redundancy.events.wire import configured_signing_keys

    if not NAME.match(group):
        raise click.UsageError(f"--group {group!r}: letters, digits, '.', '_' or '-'")
    handlers = load(modules).select(only)
    for spec in handlers:  # a named handler's configuration is checked too
        if spec.when is not None and not spec.when():
            click.echo(f"handler {spec.name} has nothing to do in this configuration", err=True)
    if list_only:
        for spec in handlers:
            types = sorted(spec.event_types) if spec.event_types else ["*"]
            click.echo(json.dumps({"handler": spec.name, "events": types, "tries": spec.tries}))
        return
    if verify and not configured_signing_keys():
        raise click.UsageError(
            "events are verified by default and EVENTS_SIGNING_KEY is not set: set it, or "
            "pass --no-verify to handle unsigned (unauthenticated) events"
        )
    broker = _broker()  # refuses the in-process broker
    runner = HandlerRunner(
        handlers,
        broker_from_settings,
        handler_state(),
        group=group,
        consumer=consumer,
        verify=verify,
    )
    server = None
    if metrics_port is not None:
        from prometheus_client import REGISTRY

        from redundancy.cli.ops import check_port_free
        from redundancy.observability.metrics import serve

        check_port_free(metrics_address, metrics_port)
        server = serve(REGISTRY, metrics_port, metrics_address)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: runner.stop.set())
    click.echo(
        f"handling {', '.join(h.name for h in handlers)} as group {group} "
        f"(consumer {runner.consumer}) on {broker.describe()}",
        err=True,
    )
    try:
        outcomes = runner.run(max_events=max_events, timeout=timeout)
    finally:
        if server is not None:
            server.stop()
    click.echo(json.dumps({"group": group, "handlers": outcomes.counts}))
    if outcomes.errors:
        raise outcomes.errors[0]


@events.command("dead-letters")
@click.option("--count", type=int, default=100, show_default=True, help="at most N entries")
@click.option("--after", default=None, help="entries after this id (paging)")
@click.option("--handler", "handler_name", default=None, help="only this handler's")
@click.option(
    "--replay",
    "replay_ids",
    multiple=True,
    help="publish this dead letter's event again for its handler, then remove it "
    "(repeatable; the id is the entry's 'id')",
)
def dead_letters(
    count: int, after: str | None, handler_name: str | None, replay_ids: tuple[str, ...]
) -> None:
    """Events the handlers gave up on, oldest first, as JSON lines: the envelope, the
    handler and group, the error, the tries and the time. With --replay, those events
    are published again (signed with EVENTS_SIGNING_KEY) and their entries removed."""
    import dataclasses

    from redundancy.events.claims import handler_state

    state = handler_state()
    if replay_ids:
        _replay(state, replay_ids)
        return
    for letter in state.dead_letters(count, after):
        if handler_name is None or letter.handler == handler_name:
            click.echo(json.dumps(dataclasses.asdict(letter)))


def _replay(state: Any, ids: tuple[str, ...]) -> None:
    """Forget each letter's dead claim, publish its event again, drop the letter: the
    handler that gave up runs it again; handlers that handled it skip it (for as long
    as EVENTS_HANDLER_DONE_TTL remembers them)."""
    from redundancy.events.claims import claim_key
    from redundancy.events.models import parse_event

    wanted = set(ids)
    found: dict[str, Any] = {}
    after = None
    while wanted - set(found):
        page = state.dead_letters(1000, after)
        if not page:
            break
        found.update({d.id: d for d in page if d.id in wanted})
        after = page[-1].id
    missing = sorted(wanted - set(found))
    if missing:
        raise click.UsageError(f"no dead letter with id {', '.join(missing)}")
    broker = _broker()
    try:
        for letter in (found[i] for i in dict.fromkeys(ids)):
            state.revive(claim_key(letter.group, letter.handler, letter.event_id))
            broker.publish_sync(parse_event(letter.envelope))
            state.drop_dead_letter(letter.id)
            click.echo(json.dumps({"replayed": letter.id, "event_id": letter.event_id}))
    finally:
        broker.disconnect_sync()
