"""Event handlers: a function registered for event types, run by ``crd events handle``.

    from redundancy.events.handlers import handler

    @handler("analysis.completed", name="score-log", tries=3)
    def log_score(event):                      # a verified AnalysisCompletedEvent
        print(event.payload.content_hash, event.payload.redundancy_score)

Registering happens when the module is imported: ``crd events handle --module my_pkg.x``
imports it (the built-in handlers of ``BUILTIN_MODULES`` are always loaded). How they
run -- a consumer group per handler, claims by ``event_id`` across processes, retries,
dead letters -- is ``redundancy.events.handling``.

A handler that raises is tried again (``tries`` in all, default
EVENTS_HANDLER_MAX_TRIES), then its event goes to the dead letters; one that raises an
``InvalidInputError`` (the event can never succeed) is dead-lettered at once.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from redundancy.errors import ConfigurationError
from redundancy.events.models import EVENT_TYPES, DomainEvent

F = TypeVar("F", bound=Callable[[DomainEvent], Any])

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""A handler's name: part of its consumer group's name and of its Redis keys."""

BUILTIN_MODULES = ("redundancy.corpus.projector", "redundancy.events.notifier")
"""Modules whose handlers every ``crd events handle`` loads."""


@dataclass(frozen=True)
class Handler:
    """One registered handler. ``event_types`` None: every event."""

    name: str
    func: Callable[[DomainEvent], Any]
    event_types: frozenset[str] | None
    tries: int | None = None
    """Tries before dead letters; None: EVENTS_HANDLER_MAX_TRIES."""
    when: Callable[[], bool] | None = None
    """Whether it has work in this configuration (checked when handlers are selected)."""

    def __call__(self, event: DomainEvent) -> Any:
        return self.func(event)


class HandlerRegistry:
    """Handlers by name. ``handler`` (the decorator) adds to the process's ``registry``."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def handler(
        self,
        *event_types: str,
        name: str | None = None,
        tries: int | None = None,
        when: Callable[[], bool] | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated function for ``event_types`` (none: every event) under
        ``name`` (default: the function's name); ``when()`` False leaves it out of a run
        that does not name it."""

        def register(func: F) -> F:
            self.add(func, event_types, name=name or func.__name__, tries=tries, when=when)
            return func

        return register

    def add(
        self,
        func: Callable[[DomainEvent], Any],
        event_types: Iterable[str] = (),
        *,
        name: str,
        tries: int | None = None,
        when: Callable[[], bool] | None = None,
    ) -> Handler:
        if not NAME.match(name):
            raise ConfigurationError(
                f"handler name {name!r}: letters, digits, '.', '_' or '-' (at most 64)"
            )
        types = frozenset(event_types)
        for event_type in sorted(types - set(EVENT_TYPES)):
            close = difflib.get_close_matches(event_type, EVENT_TYPES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigurationError(
                f"handler {name!r}: unknown event type {event_type!r}{hint}; "
                f"known: {', '.join(EVENT_TYPES)}"
            )
        if tries is not None and not 1 <= tries <= 100:
            raise ConfigurationError(f"handler {name!r}: tries must be 1 to 100, got {tries}")
        found = self._handlers.get(name)
        if found is not None and _qualname(found.func) != _qualname(func):
            raise ConfigurationError(
                f"two handlers named {name!r}: {_qualname(found.func)} and {_qualname(func)}"
            )
        spec = Handler(name, func, types or None, tries, when)
        self._handlers[name] = spec  # the same function again (a re-import) replaces it
        return spec

    def remove(self, name: str) -> None:
        self._handlers.pop(name, None)

    def __iter__(self) -> Iterator[Handler]:
        return iter(sorted(self._handlers.values(), key=lambda h: h.name))

    def __len__(self) -> int:
        return len(self._handlers)

    def select(self, only: Iterable[str] = ()) -> list[Handler]:
        """The handlers named in ``only`` (when empty: all with work to do, see ``when``);
        an unknown name is an error."""
        wanted = list(dict.fromkeys(only))
        if not wanted:
            return [h for h in self if h.when is None or h.when()]
        for name in wanted:
            if name not in self._handlers:
                close = difflib.get_close_matches(name, list(self._handlers), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                known = ", ".join(sorted(self._handlers)) or "none"
                raise ConfigurationError(f"no handler named {name!r}{hint}; handlers: {known}")
        return [self._handlers[name] for name in wanted]


def _qualname(func: Callable[..., Any]) -> str:
    return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


registry = HandlerRegistry()
"""The process's handlers; ``@handler`` registers here."""

handler = registry.handler


def load(modules: Iterable[str] = (), *, builtins: bool = True) -> HandlerRegistry:
    """Import the built-in handler modules and ``modules`` (each registers its handlers);
    nothing is imported from the working directory unless it is on ``sys.path``."""
    for module in (*(BUILTIN_MODULES if builtins else ()), *modules):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import handler module {module!r}: {exc}") from exc
    return registry


__all__ = ["BUILTIN_MODULES", "Handler", "HandlerRegistry", "handler", "load", "registry"]
