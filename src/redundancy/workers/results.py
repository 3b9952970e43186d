"""The result backend: Celery's Redis backend, each task state stored in one round trip,
with the job's event written to the outbox in that same round trip.

Celery's Redis backend reads the stored state before every write (a GET, so that a late
duplicate never overwrites SUCCESS), then writes it (SETEX and PUBLISH in MULTI/EXEC):
two round trips per state, four per task with ``task_track_started``. ``STORE`` does the
same check, write and publish in one Lua script -- atomically, which also closes the gap
between Celery's read and its write.

The results cache's requests travel with these two: its lookup with the STARTED store,
its store with the SUCCESS store (``redundancy.cache.overlap``). When the cache is on
this Redis server (another database of it, as by default with one Redis), the request
goes in the same write on this backend's connection -- ``SELECT`` the cache's database,
its script, ``SELECT`` back, then ours -- and both replies come back together: one round
trip where there were two, two per task in all. On another server it goes on the
cache's own connection just before ours and is read just after.

The STARTED state (``task_track_started``) carries the attempt's delivery count along:
the poison-message guard (``RedundancyTask.before_start``, right after) reads it from the
request instead of counting in a round trip of its own.

A SUCCESS carries the job's event along (``redundancy.events.signals.event_with_result``):
the script appends it to the outbox, which lives in this same Redis (the job store is the
result backend's), so the event is durable at the very moment the result is, one round
trip instead of two. The ``task_success`` handler then sees the request marked and writes
nothing; it writes the event itself whenever this path did not (another backend, an
ops override of ``result_backend``, a result that was already stored).

``celeryconfig`` selects it for a Redis result backend, as
``redundancy.workers.results:RedisResultBackend+redis://...`` (Celery's
``<backend>+<url>`` form, as in ``cache+memory://``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError

from redundancy import keys
from redundancy.cache import overlap
from redundancy.config import get_settings
from redundancy.events import metrics as event_metrics
from redundancy.events.signals import STORED_WITH_RESULT, event_with_result
from redundancy.kv.clients import RedisSyncBackend
from redundancy.kv.ops import Script
from redundancy.workers.deliveries import DELIVERIES_COUNTED, DELIVERY_COUNTER_TTL

log = logging.getLogger(__name__)

STORE = """
local count = 0
if KEYS[3] ~= '' then
  count = redis.call('INCR', KEYS[3])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return {0, count} end
end
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SETEX', KEYS[1], ARGV[2], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
if KEYS[2] ~= '' then redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4)) end
return {1, count}
"""
"""KEYS: the result key, the outbox or '', a delivery counter or ''. ARGV: the encoded
meta, its TTL in seconds (0: none), the counter's TTL, then the outbox entry's fields and
values. Returns {stored, deliveries}: stored is 0 when a SUCCESS was already there (then
nothing is written, as in Celery); deliveries is the counter after its INCR (0: none)."""


@dataclass
class _Rider:
    """A request of the cache's travelling in the backend's write (``_store``)."""

    db: int
    sha: str
    keys: tuple[Any, ...]
    args: tuple[Any, ...]
    sent: bool = False
    reply: Any = None

    def read(self) -> Any:
        if not self.sent:  # the write failed before it went out (retries leave it out)
            raise RedisConnectionError("the result store carrying it was not sent")
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


class RedisResultBackend(RedisBackend):  # type: ignore[misc]
    """Celery's Redis result backend with one-round-trip stores (module docstring)."""

    @cached_property
    def _store_script(self) -> Any:
        return self.client.register_script(STORE)

    @cached_property
    def _job_store_here(self) -> bool:
        """This Redis is the job store (delivery counters, the outbox), as by default; an
        ops override of ``result_backend`` may point elsewhere."""
        return bool(self.url) and self.url == get_settings().job_store_url

    @cached_property
    def _outbox_here(self) -> bool:
        """Events go with results only when the outbox is in this Redis."""
        return self._job_store_here and get_settings().events_enabled

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        if state == states.FAILURE:  # rare, and kept on Celery's path (failure TTL, events)
            return super()._store_result(task_id, result, state, traceback, request, **kwargs)
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError(
                "value too large for Redis backend", state=state, task_id=task_id
            )
        event = self._event_fields(request, result) if state == states.SUCCESS else None
        counter = self._delivery_counter(request) if state == states.STARTED else None
        # The results cache's request travels with ours (_riding: in our write, or beside it).
        send, receive = (
            (overlap.send_lookup, overlap.receive_lookup)
            if state == states.STARTED
            else (overlap.send_store, overlap.receive_store)
        )
        riders: list[_Rider] = []
        pending = send(request, self._riding(riders)) if request is not None else None
        try:
            stored, count = self.ensure(
                self._store, (self.get_key_for_task(task_id), value, event, counter, riders)
            )
        finally:
            receive(pending, request)
        if stored and event is not None:
            setattr(request, STORED_WITH_RESULT, True)
            event_metrics.OUTBOX_WRITTEN.inc()
        if counter is not None:
            setattr(request, DELIVERIES_COUNTED, int(count))
        return result

    def _riding(self, riders: list[_Rider]) -> overlap.Via:
        """How the cache's request of this store travels: in our write when the cache
        is on this server (collected in ``riders``), else on its own connection."""

        def via(
            cache: RedisSyncBackend, script: Script, keys: tuple[Any, ...], args: tuple[Any, ...]
        ) -> Callable[[], Any]:
            db = cache.same_server(self.client.connection_pool)
            if db is None:
                return cache.send_script(script, keys, args)
            rider = _Rider(db, cache.script_sha(script), keys, args)
            riders.append(rider)
            return rider.read

        return via

    def _delivery_counter(self, request: Any) -> str | None:
        """The delivery counter of this attempt, counted with the STARTED state (the job
        store is this Redis), so ``RedundancyTask.before_start`` needs no round trip."""
        if request is None or not self._job_store_here or getattr(request, "is_eager", False):
            return None
        return keys.delivery_counter(request.id, request.retries or 0)

    def _event_fields(self, request: Any, result: Any) -> Mapping[str, str | bytes] | None:
        """The job's outbox entry, or None (no event, or the task_success handler's turn:
        a failure here is logged there again when it retries, never raised)."""
        if request is None or not self._outbox_here:
            return None
        try:
            message = event_with_result(request, result)
        except Exception:
            log.warning("event of task %s not built with its result", request.id, exc_info=True)
            return None
        return None if message is None else message.fields()

    def _store(
        self,
        key: str,
        value: Any,
        event: Mapping[str, str | bytes] | None,
        counter: str | None,
        riders: list[_Rider] | None = None,
    ) -> tuple[bool, int]:
        fields = [item for pair in (event or {}).items() for item in pair]
        script_keys = [key, keys.outbox() if event else "", counter or ""]
        args = [value, int(self.expires or 0), DELIVERY_COUNTER_TTL, *fields]
        waiting = [r for r in riders or () if not r.sent]  # a retry never sends one twice
        if not waiting:
            stored, count = self._store_script(keys=script_keys, args=args)
            return bool(stored), int(count)
        ours = int(self.client.connection_pool.connection_kwargs.get("db") or 0)
        pipe = self.client.pipeline(transaction=False)
        at: list[int] = []  # where each rider's reply is
        for rider in waiting:
            if rider.db != ours:
                pipe.execute_command("SELECT", rider.db)
            pipe.execute_command("EVALSHA", rider.sha, len(rider.keys), *rider.keys, *rider.args)
            at.append(len(pipe) - 1)
            if rider.db != ours:
                pipe.execute_command("SELECT", ours)  # the connection goes back as it came
            rider.sent = True
        script = self._store_script
        pipe.execute_command("EVALSHA", script.sha, len(script_keys), *script_keys, *args)
        try:
            replies = pipe.execute(raise_on_error=False)
        except Exception as exc:  # no reply for anyone (Celery's ensure retries ours)
            for rider in waiting:
                rider.reply = exc
            raise
        for rider, index in zip(waiting, at, strict=True):
            rider.reply = replies[index]
        reply = replies[-1]
        if isinstance(reply, NoScriptError):  # not loaded on this server yet: load, run
            reply = script(keys=script_keys, args=args)
        elif isinstance(reply, Exception):
            raise reply
        stored, count = reply
        return bool(stored), int(count)
