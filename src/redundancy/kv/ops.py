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


class _Stepper:
    """One flow in progress: sends each op's reply into it, or throws in the exception the
    op raised. Both drivers step through it, so they differ only in how an op is performed.
    """

    __slots__ = ("error", "flow", "result", "value")

    def __init__(self, flow: Flow[Any]) -> None:
        self.flow = flow
        self.value: Any = None
        self.error: Exception | None = None
        self.result: Any = None

    def next_op(self) -> Op | None:
        """The flow's next op, or None when it returned (its value is in ``result``)."""
        try:
            op = self.flow.send(self.value) if self.error is None else self.flow.throw(self.error)
        except StopIteration as stop:
            self.result = stop.value
            return None
        self.value, self.error = None, None
        return op

    def failed(self, exc: BaseException) -> None:
        """Performing an op raised ``exc``: an ``Exception`` goes to the flow to handle;
        anything else (cancelled, interrupted) closes the flow and propagates (a lock the
        flow holds simply expires)."""
        if not isinstance(exc, Exception):
            self.flow.close()
            raise exc
        self.error = exc


def run_sync(flow: Flow[T], backend: SyncBackend) -> T:
    """Run ``flow`` to completion with blocking I/O."""
    stepper = _Stepper(flow)
    while (op := stepper.next_op()) is not None:
        try:
            stepper.value = _perform(op, backend)
        except BaseException as exc:
            stepper.failed(exc)
    return stepper.result  # type: ignore[no-any-return]


async def run_async(flow: Flow[T], backend: AsyncBackend) -> T:
    """Run ``flow`` to completion on the running event loop."""
    stepper = _Stepper(flow)
    while (op := stepper.next_op()) is not None:
        try:
            stepper.value = await _perform_async(op, backend)
        except BaseException as exc:
            stepper.failed(exc)
    return stepper.result  # type: ignore[no-any-return]


def _perform(op: Op, backend: SyncBackend) -> Any:
    if isinstance(op, Command):
        return backend.execute(op.args)
    if isinstance(op, Pipeline):
        return backend.pipeline(op.commands, op.transaction)
    if isinstance(op, RunScript):
        return backend.script(op.script, op.keys, op.args)
    if isinstance(op, Sleep):
        return time.sleep(op.seconds)
    if isinstance(op, Call):
        value = op.fn()
        if inspect.isawaitable(value):
            _discard(value)
            raise TypeError(
                "the sync cache face needs a sync factory; use the async RedisCache "
                "for a coroutine function"
            )
        return value
    raise TypeError(f"unknown op {op!r}")  # pragma: no cover - a programming error in a flow


async def _perform_async(op: Op, backend: AsyncBackend) -> Any:
    if isinstance(op, Command):
        return await backend.execute(op.args)
    if isinstance(op, Pipeline):
        return await backend.pipeline(op.commands, op.transaction)
    if isinstance(op, RunScript):
        return await backend.script(op.script, op.keys, op.args)
    if isinstance(op, Sleep):
        return await asyncio.sleep(op.seconds)
    if isinstance(op, Call):
        value = op.fn()
        return (await value) if inspect.isawaitable(value) else value
    raise TypeError(f"unknown op {op!r}")  # pragma: no cover


def _discard(awaitable: Awaitable[Any]) -> None:
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()  # no "coroutine was never awaited" warning


def as_text(value: Any) -> str:
    """Redis replies arrive as bytes (redis-py) or str; flows want str."""
    return value.decode() if isinstance(value, bytes) else str(value)
