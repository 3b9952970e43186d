"""The results cache's round trips waited for together with the result backend's.

A cache miss costs a task two round trips of its own (look the entry up and lock it;
store it and unlock) besides the result backend's two (STARTED, SUCCESS), and a pool
process waits for each in turn. Here each of the cache's requests travels with the
backend's: when the cache is on the result backend's Redis server, inside the backend's
own write on its connection (``via``, ``redundancy.workers.results``: one round trip
carries both, two in all per task); on another server, on a connection of the cache's,
sent just before the backend's request and read just after it. Four waits become two
either way.

* STARTED: a task with a registered key function (``early_key``) has its entry looked
  up (``GET_OR_LOCK``); ``cached()`` in the body adopts the reply instead of asking.
* SUCCESS: the value the body computed, with the lock's release (``STORE_AND_UNLOCK``),
  handed over by ``cached()`` instead of written before the body returned.

What the backend did not take is done by the task itself in ``after_return`` (``finish``):
a store is written, an early lock the body did not use is released. A worker that dies
leaves a lock that expires, as before. Only the real Redis cache takes part (the
in-memory twin has no round trips to save); any failure here is the cache's (counted,
logged, never the task's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import NoScriptError

from redundancy.cache.client import get_cache
from redundancy.cache.core import GET_OR_LOCK, STORE_AND_UNLOCK, EarlyLookup, StoreLater
from redundancy.config import get_settings
from redundancy.kv.clients import RedisSyncBackend
from redundancy.kv.ops import Script

log = logging.getLogger("redundancy.cache")

LOOKUP_ATTR = "crd_cache_lookup"
"""The request attribute holding the task's ``EarlyLookup``."""
STORE_ATTR = "crd_cache_store"
"""The request attribute holding the body's ``StoreLater``."""

KeyFunction = Callable[[tuple[Any, ...], dict[str, Any]], str | None]
Via = Callable[[RedisSyncBackend, Script, tuple[Any, ...], tuple[Any, ...]], Callable[[], Any]]
"""How a request of the cache's goes out: given the cache's client, a script, its keys and
arguments, put it on its way and return the function that reads its reply (once)."""
EARLY_KEYS: dict[str, KeyFunction] = {}
"""Task name -> the cache key of a call from its arguments (None: no early lookup)."""


def early_key(task_name: str) -> Callable[[KeyFunction], KeyFunction]:
    """Register ``task_name``'s key function. It must not validate or raise: a key the
    body does not ask for costs the early lookup only (its lock is released)."""

    def register(fn: KeyFunction) -> KeyFunction:
        EARLY_KEYS[task_name] = fn
        return fn

    return register


def usable(request: Any) -> bool:
    """A task run by a worker's tracer (not called directly, not eager) on the Redis cache:
    its after_return finishes what is left."""
    if request is None or getattr(request, "called_directly", True):
        return False
    return not getattr(request, "is_eager", False) and _redis() is not None


def _on_its_own(
    backend: RedisSyncBackend, script: Script, keys: tuple[Any, ...], args: tuple[Any, ...]
) -> Callable[[], Any]:
    """The default ``via``: on a connection of the cache's, read later."""
    return backend.send_script(script, keys, args)


def cache_client() -> RedisSyncBackend | None:
    """The cache's Redis client in this process, or None (the in-memory twin)."""
    found = _redis()
    return None if found is None else found[1]


def _redis() -> tuple[Any, RedisSyncBackend] | None:
    cache = get_cache()
    backend = cache.core.connector.sync()
    return (cache.core, backend) if isinstance(backend, RedisSyncBackend) else None


Pending = tuple[Callable[[], Any], Any, Any]


def send_lookup(request: Any, via: Via = _on_its_own) -> Pending | None:
    """Put the early lookup of ``request``'s entry on its way (STARTED), or None."""
    fn = EARLY_KEYS.get(getattr(request, "task", None) or "")
    if fn is None or getattr(request, "is_eager", False) or not get_settings().cache_results:
        return None
    if getattr(request, LOOKUP_ATTR, None) is not None:
        return None  # a STARTED store retried: its first lookup (and lock) stands
    try:
        key = fn(tuple(request.args or ()), dict(request.kwargs or {}))
        found = _redis() if key else None
        if key is None or found is None:
            return None
        core, backend = found
        early = core.early_lookup(key)
        if early is None:
            return None
        read = via(backend, GET_OR_LOCK, (early.full, early.lock), (early.token, early.lock_ms))
    except Exception:
        log.debug("early cache lookup not sent", exc_info=True)
        return None
    return read, early, core


def receive_lookup(pending: Pending | None, request: Any) -> None:
    """Read the early lookup's reply and leave it on the request for ``cached()``."""
    if pending is None:
        return
    read, early, core = pending
    try:
        early.reply = read()
    except NoScriptError:
        pass  # no lock taken; the body's own lookup loads the script
    except Exception as exc:
        core.lookup_failed(early, exc)  # counted; the body's lookup tries again
    setattr(request, LOOKUP_ATTR, early)


def hand_over(request: Any) -> Callable[[StoreLater], bool]:
    """``cached()``'s ``defer``: the store waits on the request for the SUCCESS store."""

    def defer(later: StoreLater) -> bool:
        setattr(request, STORE_ATTR, later)
        return True

    return defer


def send_store(request: Any, via: Via = _on_its_own) -> Pending | None:
    """Put the body's store on its way (SUCCESS), or None."""
    later = getattr(request, STORE_ATTR, None) if request is not None else None
    found = _redis() if later is not None else None
    if later is None or found is None:
        return None
    core, backend = found
    try:
        read = via(backend, STORE_AND_UNLOCK, later.keys, later.args)
    except Exception:
        return None  # finish() writes it
    setattr(request, STORE_ATTR, None)
    return read, later, core


def receive_store(pending: Pending | None, request: Any = None) -> None:
    """Read the store's reply (``request`` unused: the signature of ``receive_lookup``)."""
    if pending is None:
        return
    read, later, core = pending
    try:
        read()
    except Exception:
        # NOSCRIPT, or no reply (the write carrying it failed, and Celery stored the
        # result again without it): write it now, or its lock would hold the text's next
        # callers until it expires. Storing twice is harmless (same value, own token).
        _store_now(later)
        return
    core.stored_later(later, None)


def _store_now(later: StoreLater) -> None:
    found = _redis()
    if found is None:
        return
    core, backend = found
    try:
        backend.script(STORE_AND_UNLOCK, later.keys, later.args)
    except Exception as exc:
        core.stored_later(later, exc)
        return
    if later.args[0]:  # a value, not only a lock's release
        core.stored_later(later, None)


def finish(request: Any) -> None:
    """After the task (``after_return``): write a store the backend did not take, release
    an early lock the body did not adopt. Never raises."""
    try:
        later: StoreLater | None = getattr(request, STORE_ATTR, None)
        if later is not None:
            setattr(request, STORE_ATTR, None)
            _store_now(later)
        early: EarlyLookup | None = getattr(request, LOOKUP_ATTR, None)
        if early is not None:
            setattr(request, LOOKUP_ATTR, None)
            if early.locked and not early.adopted:
                _store_now(StoreLater(early.ctype, (early.full, early.lock), (b"", 1, early.token)))
    except Exception:
        log.warning("results cache: finishing the task's cache work failed", exc_info=True)
