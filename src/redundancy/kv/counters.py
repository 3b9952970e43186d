"""Counters in Redis that expire: the batch's progress, the delivery counters."""

from __future__ import annotations

from typing import Any


def incr_with_ttl(client: Any, key: str, ttl: int) -> int:
    """INCR ``key`` and renew its TTL (s) in one round trip; the new count.

    ``client``: a redis-py client. No transaction: INCR is atomic by itself, and the
    EXPIRE only keeps an active counter from expiring.
    """
    pipe = client.pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, ttl)
    count, _ = pipe.execute()
    return int(count)
