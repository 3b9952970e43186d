"""When may a request of the cache's travel on another client's connection? Only when
both pools reach the same Redis server the same way (``RedisSyncBackend.same_server``,
which the result backend asks before taking the cache's request into its own write)."""

from __future__ import annotations

import pytest
import redis

from redundancy.kv.clients import RedisSyncBackend


def cache_on(url: str) -> RedisSyncBackend:
    return RedisSyncBackend(redis.Redis.from_url(url), max_connections=2, wait=1.0)


def pool(url: str) -> redis.ConnectionPool:
    return redis.ConnectionPool.from_url(url)


@pytest.mark.parametrize(
    ("cache", "backend", "expected"),
    [
        ("redis://h:6379/2", "redis://h:6379/1", 2),  # another database of the server
        ("redis://h:6379", "redis://h:6379/1", 0),
        ("redis://u:p@h:6379/5", "redis://u:p@h:6379/1", 5),
        ("redis://h:6380/2", "redis://h:6379/1", None),  # another port
        ("redis://other:6379/2", "redis://h:6379/1", None),  # another host
        ("redis://u:p@h:6379/2", "redis://u:q@h:6379/1", None),  # other credentials
        ("rediss://h:6379/2", "redis://h:6379/1", None),  # TLS on one side only
        ("unix:///tmp/a.sock?db=2", "unix:///tmp/b.sock?db=1", None),  # other sockets
        ("unix:///tmp/a.sock?db=2", "unix:///tmp/a.sock?db=1", 2),
    ],
)
def test_a_request_rides_along_only_to_the_same_server(cache, backend, expected):
    assert cache_on(cache).same_server(pool(backend)) == expected


def test_replies_decoded_differently_never_share_a_connection():
    decoding = RedisSyncBackend(
        redis.Redis.from_url("redis://h:6379/2", decode_responses=True), 2, 1.0
    )
    assert decoding.same_server(pool("redis://h:6379/1")) is None


def test_a_client_without_a_pool_of_its_own_keeps_its_own_connections():
    class ClusterLike:  # a cluster client has a pool per node, not one
        pass

    assert RedisSyncBackend(ClusterLike(), 2, 1.0).same_server(pool("redis://h:6379/1")) is None
    assert cache_on("redis://h:6379/2").same_server(None) is None
