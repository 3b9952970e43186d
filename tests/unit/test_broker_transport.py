"""The Redis broker transport: chosen for plain Redis broker URLs only, and the shape
check that turns an entry that is not a kombu envelope into one rejection (the real
broker test: tests/integration/test_message_guard.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kombu import Connection

from redundancy.workers.celeryconfig import BROKER_TRANSPORT, broker_transport
from redundancy.workers.transport import GuardedMessage, MalformedEnvelopeError, Transport


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379/0", BROKER_TRANSPORT),
        ("rediss://localhost:6380/0", BROKER_TRANSPORT),
        ("amqp://guest:guest@localhost//", None),
        ("sentinel://localhost:26379", None),
        ("redis+socket:///tmp/redis.sock", None),
        ("memory://localhost/", None),
        (None, None),
    ],
)
def test_the_transport_is_ours_for_plain_redis_urls_only(url, expected):
    assert broker_transport(url) == expected


def test_create_app_picks_it_from_the_url_celery_resolved(monkeypatch):
    from redundancy.workers import create_app

    # CELERY_BROKER_URL (Celery's own variable) wins over the settings: the choice follows it
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
    app = create_app()
    assert app.conf.broker_transport == BROKER_TRANSPORT
    with app.connection_for_write() as conn:
        assert conn.transport_cls == BROKER_TRANSPORT
        assert isinstance(conn.transport, Transport)
        assert (conn.host, conn.virtual_host) == ("127.0.0.1:1", "0")  # the URL still parsed
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:1//")
    assert create_app().conf.broker_transport is None


def envelope(**changes: Any) -> dict[str, Any]:
    good: dict[str, Any] = {
        "body": base64.b64encode(json.dumps([[], {}, {}]).encode()).decode(),
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {"task": "x", "id": "1"},
        "properties": {
            "delivery_tag": "tag",
            "body_encoding": "base64",
            "delivery_info": {"exchange": "analysis", "routing_key": "analysis"},
        },
    }
    good.update(changes)
    return good


def channel() -> Any:
    return Connection("memory://localhost/").default_channel


def test_a_kombu_envelope_makes_kombus_message():
    message = GuardedMessage(envelope(), channel=channel())
    assert message.decode() == [[], {}, {}]
    assert message.delivery_info["routing_key"] == "analysis"


@pytest.mark.parametrize(
    "payload",
    [
        [1, 2, 3],
        "a string",
        42,
        {},
        envelope(properties=["not", "a", "dict"]),
        envelope(body="!!!notbase64"),
        envelope(properties={"delivery_tag": "t", "body_encoding": "base64"}),
        envelope(properties={"delivery_tag": 7,
                             "delivery_info": {"exchange": "", "routing_key": ""}}),
        envelope(headers=["not", "a", "dict"]),
        envelope(properties={"delivery_tag": "t", "body_encoding": "rot13",
                             "delivery_info": {"exchange": "", "routing_key": ""}}),
    ],
)  # fmt: skip
def test_anything_else_is_one_malformed_envelope_error(payload):
    with pytest.raises(MalformedEnvelopeError, match=r"rejected \(malformed_envelope\)") as caught:
        GuardedMessage(payload, channel=channel())
    assert caught.value.raw is payload
