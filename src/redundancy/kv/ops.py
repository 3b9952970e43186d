"""Operations as data, and the two drivers that run them (see the package docstring).

A flow is ``Generator[Op, Any, T]``: it yields an op, the driver performs it and sends
the result back in (or throws the exception the op raised into the flow, so the flow's
own ``try/except`` decides what an error means). The flow's return value is the result.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Command:
    """One Redis command, e.g. ``Command(("GET", "redundancy:cache:v1:k"))``."""

    args: tuple[Any, ...]


def cmd(*args: Any) -> Command:
    return Command(args)


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Commands sent in one round trip; ``transaction`` wraps them in MULTI/EXEC."""

    commands: tuple[Command, ...]
    transaction: bool = False


@dataclass(frozen=True)
class Script:
    """A Lua script. ``MemoryStore`` runs the Python twin registered under ``name``."""

    name: str
    lua: str


@dataclass(frozen=True, slots=True)
class RunScript:
    script: Script
    keys: tuple[Any, ...]
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Call:
    """Call user code (a cache factory). The async driver awaits an awaitable result."""

    fn: Callable[[], Any]


Op = Command | Pipeline | RunScript | Sleep | Call
Flow = Generator[Op, Any, T]


class SyncBackend(Protocol):
    def execute(self, args: tuple[Any, ...]) -> Any: ...
    def pipeline(self, commands: tuple[Command, ...], transaction: bool) -> list[Any]: ...
    def script(self, script: Script, keys: tuple[Any, ...], args: tuple[Any, ...]) -> Any: ...


class AsyncBackend(Protocol):
    async def execute(self, args: tuple[Any, ...]) -> Any: ...
    async def pipeline(self, commands: tuple[Command, ...], transaction: bool) -> list[Any]: ...
    async def script(self, script: Script, keys: tuple[Any, ...], args: tuple[Any, ...]) -> Any: ...


def run_sync(flow: Flow[T], backend: SyncBackend) -> T:
    """Run ``flow`` to completion with blocking I/O."""
    value: Any = None
    error: Exception | None = None
    while True:
        try:
            op = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value, error = None, None
        try:
            if isinstance(op, Command):
                value = backend.execute(op.args)
            elif isinstance(op, Pipeline):
                value = backend.pipeline(op.commands, op.transaction)
            elif isinstance(op, RunScript):
                value = backend.script(op.script, op.keys, op.args)
            elif isinstance(op, Sleep):
                time.sleep(op.seconds)
            elif isinstance(op, Call):
                value = op.fn()
                if inspect.isawaitable(value):
                    _discard(value)
                    raise TypeError(
                        "the sync cache face needs a sync factory; use the async RedisCache "
                        "for a coroutine function"
                    )
            else:  # pragma: no cover - a programming error in a flow
                raise TypeError(f"unknown op {op!r}")
        except Exception as exc:
            error = exc
        except BaseException:
            flow.close()
            raise


async def run_async(flow: Flow[T], backend: AsyncBackend) -> T:
    """Run ``flow`` to completion on the running event loop."""
    value: Any = None
    error: Exception | None = None
    while True:
        try:
            op = flow.send(value) if error is None else flow.throw(error)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value, error = None, None
        try:
            if isinstance(op, Command):
                value = await backend.execute(op.args)
            elif isinstance(op, Pipeline):
                value = await backend.pipeline(op.commands, op.transaction)
            elif isinstance(op, RunScript):
                value = await backend.script(op.script, op.keys, op.args)
            elif isinstance(op, Sleep):
                await asyncio.sleep(op.seconds)
            elif isinstance(op, Call):
                value = op.fn()
                if inspect.isawaitable(value):
                    value = await value
            else:  # pragma: no cover
                raise TypeError(f"unknown op {op!r}")
        except Exception as exc:
            error = exc
        except BaseException:  # cancelled: a held lock simply expires
            flow.close()
            raise


def _discard(awaitable: Awaitable[Any]) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()  # no "coroutine was never awaited" warning


def as_text(value: Any) -> str:
    """Redis replies arrive as bytes (redis-py) or str; flows want str."""
    return value.decode() if isinstance(value, bytes) else str(value)
