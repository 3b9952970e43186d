"""The Redis broker transport on a real Redis: publishing, tracking and acknowledging
messages reuse one redis-py client per connection pool (kombu built one per call, ~70 µs
each, twice per task in a worker's main process), and a new pool gets a new client."""

from __future__ import annotations

import uuid

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue

from redundancy.workers.transport import Transport
from tests.services import REDIS_BROKER_DB, flush_db, redis_url

pytestmark = pytest.mark.integration

MESSAGES = 25


@pytest.fixture
def broker_url(redis_server: str) -> str:
    url = redis_url(REDIS_BROKER_DB)
    flush_db(url)
    return url


@pytest.fixture
def clients_made(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every redis-py client built from now on (pipelines are not clients)."""
    made: list[object] = []
    init = redis.Redis.__init__

    def counted(self: redis.Redis, *args: object, **kwargs: object) -> None:
        made.append(self)
        init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(redis.Redis, "__init__", counted)
    return made


def round_trip(conn: Connection, queue: Queue, n: int) -> list[str]:
    """Publish ``n`` messages, then consume and acknowledge each (QoS tracks it as
    unacknowledged on delivery and forgets it on ack: kombu's two client calls)."""
    producer = Producer(conn.default_channel, serializer="json")
    for i in range(n):
        producer.publish({"i": i}, exchange=queue.exchange, routing_key=queue.routing_key,
                         declare=[queue])  # fmt: skip
    got: list[str] = []

    def on_message(body: dict[str, int], message: object) -> None:
        got.append(str(body["i"]))
        message.ack()  # type: ignore[attr-defined]

    with Consumer(conn, [queue], callbacks=[on_message], accept=["json"]):
        while len(got) < n:
            conn.drain_events(timeout=10)
    return got


def test_messages_reuse_one_client_per_pool_and_a_new_pool_gets_its_own(broker_url, clients_made):
    name = f"crd-test-clients-{uuid.uuid4().hex[:8]}"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)
    with Connection(broker_url, transport=Transport) as conn:
        got = round_trip(conn, queue, MESSAGES)
        assert got == [str(i) for i in range(MESSAGES)]
        channel = conn.default_channel
        # 2n publishes/acks/deliveries went through kombu's conn_or_acquire: on kombu's own
        # channel that is a client each; here one for them all (plus the async client kombu
        # keeps for BRPOP, and at most one more for set-up)
        assert len(clients_made) <= 3, len(clients_made)
        client = channel._create_client()
        assert client is channel._create_client()
        assert client.connection_pool is channel.pool
        # a reconnect drops the pool: the next client is built on the new one
        channel._pool = None
        fresh = channel._create_client()
        assert fresh is not client
        assert fresh.connection_pool is channel.pool
        assert round_trip(conn, queue, 3) == ["0", "1", "2"]
