"""Redis plumbing shared by the cache and the sessions: logic written once.

Each operation (a cache ``get``, a session update ...) is a generator that *yields* what it
needs -- a Redis command, a pipeline, a Lua script, a pause, a call to user code -- and
receives the answer (a "sans-I/O" flow). A sync driver runs flows on ``redis.Redis``, an
async driver on ``redis.asyncio.Redis``, and both can run them on ``MemoryStore``, the
in-memory twin of the few Redis commands we use. So key building, serialisation,
statistics and policy exist once, and the async API, the sync face the workers use and
the embedded default cannot drift apart.
"""

from __future__ import annotations

from redundancy.kv.clients import Connector
from redundancy.kv.memory import MemoryStore
from redundancy.kv.ops import (
    Call,
    Command,
    Flow,
    Pipeline,
    RunScript,
    Script,
    Sleep,
    cmd,
    run_async,
    run_sync,
)

__all__ = [
    "Call",
    "Command",
    "Connector",
    "Flow",
    "MemoryStore",
    "Pipeline",
    "RunScript",
    "Script",
    "Sleep",
    "cmd",
    "run_async",
    "run_sync",
]
