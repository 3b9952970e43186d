"""Batch data that is not a result: staged documents, progress and LSH tables.

It lives in the result backend's Redis (``Settings.job_store_url``), which production
runs without eviction; the embedded default uses the in-memory twin. The client comes
from ``redundancy.resources``: made lazily per process, so a prefork child never
inherits its parent's sockets.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from redundancy import keys, resources

STAGE_PIPELINE = 500
"""Documents written per Redis round trip when staging a batch."""
PROGRESS_SEARCH = "search"
PROGRESS_DOCUMENTS = "documents"
"""Fields of a batch's progress hash: search sub-tasks finished, documents analysed."""


class JobStore(Protocol):
    def stage(self, batch_id: str, docs: Iterable[tuple[str, Any]], ttl: int) -> int: ...
    def load(self, batch_id: str, positions: Sequence[int]) -> list[tuple[str, Any] | None]: ...
    def delete(self, batch_id: str, *, partitions: int = 0, chunks: int = 0) -> None: ...
    def put_blobs(self, tables: dict[str, dict[str, bytes]], ttl: int) -> None: ...
    def get_blobs(self, key: str) -> list[bytes]: ...
    def advance(self, batch_id: str, ttl: int, documents: int | None = None) -> None: ...
    def progress(self, batch_id: str) -> tuple[int, int]: ...


class MemoryJobStore:
    """In-process twin for the embedded default and unit tests."""

    def __init__(self) -> None:
        self._docs: dict[str, dict[int, tuple[str, Any]]] = {}
        self._blobs: dict[str, dict[str, bytes]] = {}
        self._progress: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def stage(self, batch_id: str, docs: Iterable[tuple[str, Any]], ttl: int) -> int:
        staged = dict(enumerate(docs))
        with self._lock:
            self._docs.setdefault(batch_id, {}).update(staged)
        return len(staged)

    def load(self, batch_id: str, positions: Sequence[int]) -> list[tuple[str, Any] | None]:
        stored = self._docs.get(batch_id, {})
        return [stored.get(p) for p in positions]

    def delete(self, batch_id: str, *, partitions: int = 0, chunks: int = 0) -> None:
        with self._lock:
            self._docs.pop(batch_id, None)
            self._progress.pop(batch_id, None)
            for key in keys.batch_keys(batch_id, partitions=partitions, chunks=chunks)[2:]:
                self._blobs.pop(key, None)

    def put_blobs(self, tables: dict[str, dict[str, bytes]], ttl: int) -> None:
        with self._lock:
            for key, fields in tables.items():
                self._blobs.setdefault(key, {}).update(fields)

    def get_blobs(self, key: str) -> list[bytes]:
        with self._lock:
            return list(self._blobs.get(key, {}).values())

    def advance(self, batch_id: str, ttl: int, documents: int | None = None) -> None:
        with self._lock:
            search, done = self._progress.get(batch_id, (0, 0))
            if documents is None:
                self._progress[batch_id] = (search + 1, done)
            else:
                self._progress[batch_id] = (search, done + documents)

    def progress(self, batch_id: str) -> tuple[int, int]:
        return self._progress.get(batch_id, (0, 0))


class RedisJobStore:
    """Documents as one Redis hash per batch (position -> JSON), with a TTL.

    ``client``: a redis-py client, with the job role's timeouts from
    ``redundancy.resources`` (one reply may carry a chunk's documents or a partition's
    tables, and a Redis that accepts but never answers must not hold a task until its
    time limit).
    """

    def __init__(self, client: Any) -> None:
        self._redis = client

    def stage(self, batch_id: str, docs: Iterable[tuple[str, Any]], ttl: int) -> int:
        key = keys.batch_docs(batch_id)
        count = 0
        chunk: dict[str, str] = {}
        for position, (doc_id, text) in enumerate(docs):
            chunk[str(position)] = json.dumps({"id": doc_id, "text": text})
            count += 1
            if len(chunk) >= STAGE_PIPELINE:
                self._write(key, chunk, ttl)
                chunk = {}
        if chunk:
            self._write(key, chunk, ttl)
        return count

    def _write(self, key: str, chunk: dict[str, str], ttl: int) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(key, mapping=chunk)
        pipe.expire(key, ttl)
        pipe.execute()

    def load(self, batch_id: str, positions: Sequence[int]) -> list[tuple[str, Any] | None]:
        if not positions:
            return []
        raw = self._redis.hmget(keys.batch_docs(batch_id), [str(p) for p in positions])
        out: list[tuple[str, Any] | None] = []
        for value in raw:
            if value is None:
                out.append(None)
            else:
                doc = json.loads(value)
                out.append((doc["id"], doc["text"]))
        return out

    def delete(self, batch_id: str, *, partitions: int = 0, chunks: int = 0) -> None:
        """Every key of the batch, by name (see ``keys.batch_keys``)."""
        names = keys.batch_keys(batch_id, partitions=partitions, chunks=chunks)
        for start in range(0, len(names), 1000):
            self._redis.unlink(*names[start : start + 1000])

    def put_blobs(self, tables: dict[str, dict[str, bytes]], ttl: int) -> None:
        """Binary fields (raw little-endian arrays, never pickles), one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for key, fields in tables.items():
            if fields:
                pipe.hset(key, mapping=fields)
                pipe.expire(key, ttl)
        pipe.execute()

    def get_blobs(self, key: str) -> list[bytes]:
        return list(self._redis.hvals(key))

    def advance(self, batch_id: str, ttl: int, documents: int | None = None) -> None:
        """Count the documents an analysis sub-task analysed, or (``None``) one finished
        search sub-task; one round trip, renewing the TTL."""
        key = keys.batch_progress(batch_id)
        pipe = self._redis.pipeline(transaction=False)
        if documents is None:
            pipe.hincrby(key, PROGRESS_SEARCH, 1)
        else:
            pipe.hincrby(key, PROGRESS_DOCUMENTS, documents)
        pipe.expire(key, ttl)
        pipe.execute()

    def progress(self, batch_id: str) -> tuple[int, int]:
        """``(search sub-tasks finished, documents analysed)``."""
        search, documents = self._redis.hmget(
            keys.batch_progress(batch_id), [PROGRESS_SEARCH, PROGRESS_DOCUMENTS]
        )
        return int(search or 0), int(documents or 0)


def get_job_store() -> JobStore:
    """This process's job store: Redis on a cluster, in-process on the embedded default
    (``redundancy.resources`` decides, and makes it again in a forked child)."""
    return resources.shared("job_store", _new_job_store)


def _new_job_store() -> JobStore:
    client = resources.jobs_client()
    return MemoryJobStore() if client is None else RedisJobStore(client)
