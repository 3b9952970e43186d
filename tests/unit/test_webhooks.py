"""Signed webhooks against a real HTTP server on loopback (allow-listed), embedded default."""

from __future__ import annotations

import ipaddress
import json

import pytest

from redundancy.config import get_settings
from redundancy.events import InMemoryBroker
from redundancy.events.webhooks import WebhookRefusedError, resolve_target
from redundancy.retry import backoff
from tests.webhook_server import WebhookServer

SECRET = "s3cret-for-tests"
ITEMS = ["First document. It is short.", "First document. It is short!", "Another one."]


@pytest.fixture
def bus():
    broker = InMemoryBroker()
    broker.clear()
    yield broker
    broker.clear()


@pytest.fixture
def hooks(monkeypatch):
    """A webhook server, with the settings a deployment would use for it."""
    for name, value in {
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "WEBHOOK_BACKOFF": "0.05",
        "WEBHOOK_TIMEOUT": "0.5",
        "WEBHOOK_MAX_ATTEMPTS": "4",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    server = WebhookServer(SECRET.encode()).start()
    yield server
    server.stop()
    monkeypatch.undo()
    get_settings.cache_clear()


def run_batch(url):
    from redundancy.tasks import process_batch

    return process_batch.delay(ITEMS, webhook_url=url).get()


def outcome(bus):
    [delivered] = bus.events("webhook.delivered")
    return delivered.payload


def test_signed_delivery_retried_after_two_5xx_is_received_once_with_3_attempts(hooks, bus):
    # Given a receiver that fails twice, then accepts
    hooks.replies = [500, 503, 200]
    # When a batch with a webhook completes
    result = run_batch(hooks.url)
    # Then the receiver saw three signed POSTs of the same body and accepted one
    assert len(hooks.received) == 3
    assert all(r.signature_ok for r in hooks.received)
    assert len({r.body for r in hooks.received}) == 1
    assert len({r.headers["X-Webhook-Id"] for r in hooks.received}) == 1
    # and the body is the very batch.completed event on the bus
    [completed] = bus.messages[:1]
    assert completed.event_type == "batch.completed"
    assert hooks.received[0].body == completed.body
    body = json.loads(hooks.received[0].body)
    assert body["payload"]["batch_id"] == result["batch_id"]
    headers = hooks.received[0].headers
    assert headers["X-Webhook-Event"] == "batch.completed"
    assert headers["X-Webhook-Event-Id"] == body["event_id"]
    assert headers["X-Webhook-Timestamp"].isdigit()
    # and the outcome is on the bus with the attempts
    report = outcome(bus)
    assert (report.status, report.attempts, report.status_code) == ("delivered", 3, 200)
    assert report.delivered_event_id == body["event_id"]
    assert "token" not in report.model_dump_json()  # the URL's secret never leaks


def test_a_4xx_is_not_retried(hooks, bus):
    hooks.replies = [404]
    run_batch(hooks.url)
    assert len(hooks.received) == 1
    report = outcome(bus)
    assert (report.status, report.attempts, report.status_code) == ("failed", 1, 404)


def test_a_timeout_is_retried(hooks, bus):
    hooks.replies = [("sleep", 1.5), 200]
    run_batch(hooks.url)
    report = outcome(bus)
    assert (report.status, report.attempts) == ("delivered", 2)
    assert len(hooks.received) == 2


def test_attempts_run_out(hooks, bus):
    hooks.replies = [502, 502, 502, 502, 502]
    run_batch(hooks.url)
    report = outcome(bus)
    assert (report.status, report.attempts, report.status_code) == ("failed", 4, 502)
    assert len(hooks.received) == 4


@pytest.mark.parametrize(
    ("status", "target"), [(302, "private"), (302, "loopback"), (307, "loopback")]
)
def test_a_redirect_is_never_followed(hooks, bus, status, target):
    # Given a receiver that redirects: to a private address, or to a second receiver on
    # the allow-listed loopback (which would record any request that reached it)
    other = WebhookServer(SECRET.encode()).start()
    try:
        location = "http://10.0.0.1/" if target == "private" else other.url
        hooks.replies = [(status, location)]
        # When a batch with a webhook completes
        run_batch(hooks.url)
    finally:
        other.stop()
    # Then the delivery failed at once on the redirect, which was not followed
    report = outcome(bus)
    assert (report.status, report.attempts, report.status_code) == ("failed", 1, status)
    assert len(hooks.received) == 1
    assert other.received == []


def test_private_and_unlisted_loopback_targets_are_refused(hooks, bus, monkeypatch):
    # A private address: refused before any connection is tried
    run_batch("http://10.20.30.40:8080/hook")
    report = outcome(bus)
    assert (report.status, report.attempts) == ("refused", 0)
    assert "not a public address" in report.error
    # Loopback without the allow-list: refused, the server never hears of it
    bus.clear()
    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "")
    get_settings.cache_clear()
    run_batch(hooks.url)
    assert outcome(bus).status == "refused"
    assert hooks.received == []


def test_crd_batch_webhook(hooks, bus, tmp_path):
    from click.testing import CliRunner

    from redundancy.cli import cli

    for i, text in enumerate(ITEMS):
        (tmp_path / f"{i}.txt").write_text(text)
    out = CliRunner().invoke(cli, ["batch", str(tmp_path), "--webhook", hooks.url, "--json"])
    assert out.exit_code == 0, out.output
    assert len(hooks.received) == 1 and hooks.received[0].signature_ok
    assert json.loads(hooks.received[0].body)["payload"]["total_jobs"] == 3


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "[::1]",
        "[fe80::1]",
        "0.0.0.0",
        "localhost",
    ],
)
def test_non_public_addresses_are_refused(host):
    with pytest.raises(WebhookRefusedError):
        resolve_target(f"http://{host}/hook", allow_list=())


def test_allow_list_by_host_or_network():
    assert resolve_target("http://127.0.0.1:9/x", ["127.0.0.1"]) == [
        ipaddress.ip_address("127.0.0.1")
    ]
    assert resolve_target("http://10.1.2.3/x", ["10.0.0.0/8"])
    assert resolve_target("http://localhost/x", ["localhost"])
    with pytest.raises(WebhookRefusedError):
        resolve_target("http://10.1.2.3/x", ["192.168.0.0/16"])
    with pytest.raises(WebhookRefusedError, match="http"):
        resolve_target("ftp://example.com/x", [])


def test_backoff_doubles_with_jitter():
    for attempt, low, high in [(1, 1, 2), (2, 2, 4), (3, 4, 8)]:
        assert low <= backoff(attempt, base=2) <= high
