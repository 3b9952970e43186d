"""Clients from ``redundancy.resources`` and the one lease, on real Redis."""

from __future__ import annotations

import time

import pytest

from redundancy import resources
from redundancy.kv.lease import RedisLease
from redundancy.resources import Role
from tests.services import REDIS_BACKEND_DB, flush_db, redis_url

pytestmark = pytest.mark.integration


@pytest.fixture
def url(redis_server: str) -> str:
    url = redis_url(REDIS_BACKEND_DB)
    flush_db(url)
    return url


def test_a_connection_the_server_cut_is_reopened_by_the_one_retry(url):
    # Given a client with an open connection, and another client of the same server
    client = resources.redis_client(url, Role.JOBS)
    client.set("resources:probe", "1")
    first_id = client.client_id()
    admin = resources.redis_client(url, Role.JOBS)
    # When the server closes that connection (as a restart or an idle timeout does)
    assert admin.client_kill_filter(_id=first_id) == 1
    # Then the next command succeeds, on a new connection
    assert client.get("resources:probe") == b"1"
    assert client.client_id() != first_id


def test_one_holder_at_a_time_and_a_dead_holder_is_replaced_after_its_ttl(url):
    client = resources.redis_client(url, Role.JOBS)
    key = "redundancy:test:v1:lease"
    first, second = RedisLease(client, key, ttl=0.5), RedisLease(client, key, ttl=0.5)
    # Given the first holder took the lease
    assert first.acquire() and first.held
    # Then nobody else takes or renews it, and the holder renews it to a full ttl
    assert not second.acquire() and not second.renew() and not second.held
    assert first.renew() and 0 < client.pttl(key) <= 500
    # When the first stops renewing (it died), the second takes over once the ttl passed
    deadline = time.monotonic() + 5
    while not second.hold():
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.05)
    # Then the first can no longer renew it, and its release leaves the new holder's lease
    assert not first.renew() and not first.held
    first.held = True  # even a holder that wrongly believes it holds
    first.release()
    assert client.get(key) == second.owner.encode()
    # and the holder's release frees it at once
    second.release()
    assert client.exists(key) == 0 and first.acquire()


def test_a_broker_never_closes_an_injected_client(url):
    from redundancy.events import AnalysisCompletedEvent
    from redundancy.events.brokers.redis_streams import RedisStreamBroker
    from redundancy.events.wire import WireMessage
    from tests.events_support import unique_topic

    # Given a client the caller owns, with an open connection
    client = resources.redis_client(url, Role.EVENTS)
    connection = client.client_id()
    broker = RedisStreamBroker(url, client=client, topic=unique_topic())
    event = AnalysisCompletedEvent(content_hash="h", redundancy_score=0.5, analysis_result={})
    # When the broker publishes through it and disconnects
    broker.connect_sync()
    broker.send_sync([WireMessage.of(event)])
    broker.disconnect_sync()
    # Then the event is there and the caller's connection is still the same one
    assert client.xlen(broker.stream) == 1
    assert client.client_id() == connection
