"""Signed webhooks against a real HTTP server on loopback (allow-listed), embedded default."""

from __future__ import annotations

import base64
import hashlib
import hmac
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
    server = WebhookServer(SECRET.encode()).start()
    for name, value in {
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
        "WEBHOOK_ALLOWED_PORTS": f"80,443,{server.port}",
        "WEBHOOK_BACKOFF": "0.05",
        "WEBHOOK_TIMEOUT": "0.5",
        "WEBHOOK_MAX_ATTEMPTS": "4",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
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
    assert len({r.headers["webhook-id"] for r in hooks.received}) == 1
    # and the body is the very batch.completed event on the bus
    [completed] = bus.messages[:1]
    assert completed.event_type == "batch.completed"
    assert hooks.received[0].body == completed.body
    body = json.loads(hooks.received[0].body)
    assert body["payload"]["batch_id"] == result["batch_id"]
    headers = hooks.received[0].headers
    assert headers["X-Webhook-Event"] == "batch.completed"
    assert headers["X-Webhook-Event-Id"] == body["event_id"]
    assert headers["webhook-timestamp"].isdigit()
    assert headers["webhook-signature"].startswith("v1,")
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
    run_batch("http://10.20.30.40/hook")
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


REFUSED_TARGETS = [
    # (URL, why) -- every one resolves (or is) a non-public address, or names a port
    ("http://127.0.0.1/hook", "loopback"),
    ("http://10.0.0.1/hook", "private"),
    ("http://172.16.5.4/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://100.64.0.1/hook", "shared address space (CGNAT)"),
    ("http://169.254.169.254/latest/meta-data", "link-local (cloud metadata)"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://localhost/hook", "loopback by name"),
    ("http://2130706433/hook", "loopback as one decimal number"),
    ("http://0x7f.1/hook", "loopback in hex, short form"),
    ("http://017700000001/hook", "loopback in octal"),
    ("http://[::1]/hook", "IPv6 loopback"),
    ("http://[fe80::1]/hook", "IPv6 link-local"),
    ("http://[fc00::1]/hook", "IPv6 unique local"),
    ("http://[::ffff:127.0.0.1]/hook", "IPv4-mapped loopback"),
    ("http://[::ffff:10.0.0.1]/hook", "IPv4-mapped private"),
    ("http://[::ffff:7f00:1]/hook", "IPv4-mapped loopback, hex"),
    ("http://[::127.0.0.1]/hook", "IPv4-compatible loopback"),
    ("http://[::ffff:0:127.0.0.1]/hook", "IPv4-translated loopback"),
    ("http://[2002:7f00:1::1]/hook", "6to4 of loopback"),
    ("http://[2002:a00:1::1]/hook", "6to4 of a private address"),
    ("http://[64:ff9b::7f00:1]/hook", "NAT64 of loopback"),
    ("http://[64:ff9b::a9fe:a9fe]/hook", "NAT64 of the metadata address"),
    ("http://[64:ff9b:1::808:808]/hook", "local-use NAT64"),
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/hook", "Teredo of loopback"),
    ("http://93.184.215.14:25/hook", "public, but an SMTP port"),
    ("http://93.184.215.14:6379/hook", "public, but a Redis port"),
    ("https://93.184.215.14:8443/hook", "public, an unlisted port"),
    ("http://93.184.215.14:99999/hook", "no such port"),
    ("ftp://93.184.215.14/hook", "not http(s)"),
]


@pytest.mark.parametrize(("url", "why"), REFUSED_TARGETS, ids=[w for _, w in REFUSED_TARGETS])
def test_non_public_targets_and_other_ports_are_refused(url, why):
    # Given the default policy (no allow-list, ports 80 and 443), Then each is refused
    with pytest.raises(WebhookRefusedError):
        resolve_target(url, allow_list=())


ACCEPTED_TARGETS = [
    ("http://93.184.215.14/hook", "public IPv4, port 80"),
    ("https://93.184.215.14:443/hook", "public IPv4, port 443 named"),
    ("http://[2606:4700:4700::1111]/hook", "public IPv6"),
    ("http://[::ffff:93.184.215.14]/hook", "IPv4-mapped public"),
    ("http://[64:ff9b::5db8:d70e]/hook", "NAT64 of a public address"),
    ("http://[2002:5db8:d70e::1]/hook", "6to4 of a public address"),
]


@pytest.mark.parametrize(("url", "why"), ACCEPTED_TARGETS, ids=[w for _, w in ACCEPTED_TARGETS])
def test_public_targets_on_allowed_ports_pass(url, why):
    assert resolve_target(url, allow_list=())


def test_allow_list_by_host_or_network_and_ports_by_setting():
    ports = frozenset({80, 443, 9})
    assert resolve_target("http://127.0.0.1:9/x", ["127.0.0.1"], ports) == [
        ipaddress.ip_address("127.0.0.1")
    ]
    assert resolve_target("http://10.1.2.3/x", ["10.0.0.0/8"])
    assert resolve_target("http://localhost/x", ["localhost"])
    with pytest.raises(WebhookRefusedError):
        resolve_target("http://10.1.2.3/x", ["192.168.0.0/16"])
    with pytest.raises(WebhookRefusedError, match="http"):
        resolve_target("ftp://example.com/x", [])
    # an allow-listed host still needs an allowed port (no internal port scanning)
    with pytest.raises(WebhookRefusedError, match="WEBHOOK_ALLOWED_PORTS"):
        resolve_target("http://127.0.0.1:6379/x", ["127.0.0.1"], ports)


def test_allowed_ports_setting(settings_env):
    from redundancy.config import load_settings
    from redundancy.errors import ConfigurationError

    assert get_settings().webhook_ports == frozenset({80, 443})
    assert load_settings(webhook_allowed_ports="443, 8443").webhook_ports == {443, 8443}
    with pytest.raises(ConfigurationError, match="WEBHOOK_ALLOWED_PORTS"):
        load_settings(webhook_allowed_ports="80,http")


def test_backoff_doubles_with_jitter():
    for attempt, low, high in [(1, 1, 2), (2, 2, 4), (3, 4, 8)]:
        assert low <= backoff(attempt, base=2) <= high


# --- Standard Webhooks signatures and the README's receiver recipe -------------------


def delivery(secrets, body=b'{"event_id": "e"}', delivery_id="d-1"):
    from redundancy.events.webhooks import signed_headers

    return body, signed_headers(
        body, secrets, event_id="e", event_type="batch.completed", delivery=delivery_id
    )


def test_the_standard_webhooks_library_verifies_our_signature():
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    # Given a delivery signed with a whsec_ secret (the standard's form)
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    body, headers = delivery([b"0123456789abcdef0123456789abcdef"])
    # Then the standard's own library accepts it with that secret, and refuses another
    assert Webhook(secret).verify(body, headers) == {"event_id": "e"}
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"another secret").decode()).verify(body, headers)


def test_the_readme_recipe_accepts_fresh_requests_and_refuses_stale_forged_or_replayed_ones():
    from tests.webhook_server import readme_verify

    verify = readme_verify()
    body, headers = delivery([b"k"])
    sent = int(headers["webhook-timestamp"])
    # Given a fresh request, Then it verifies (also a little early, within tolerance)
    assert verify(b"k", headers, body)
    assert verify(b"k", headers, body, now=sent - 60)
    # Given the same request replayed later than the tolerance, Then it is refused
    assert not verify(b"k", headers, body, now=sent + 301)
    assert not verify(b"k", headers, body, now=sent - 301)
    # Given a forged body, another secret, a rewritten id or time, or no signature: refused
    assert not verify(b"k", headers, body + b" ")
    assert not verify(b"other", headers, body)
    assert not verify(b"k", {**headers, "webhook-id": "d-2"}, body)
    assert not verify(b"k", {**headers, "webhook-timestamp": str(sent + 1)}, body)
    assert not verify(b"k", {**headers, "webhook-timestamp": "\uff11\uff12\uff13"}, body)
    assert not verify(b"k", {k: v for k, v in headers.items() if k != "webhook-signature"}, body)
    # Given the old scheme (an X-Webhook-Signature over the body only), Then refused
    legacy = {"X-Webhook-Signature": "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()}
    assert not verify(b"k", legacy, body)


def test_a_secret_rotation_signs_with_both_so_receivers_holding_either_accept(monkeypatch):
    from tests.webhook_server import readme_verify

    # Given WEBHOOK_SECRET (new) and WEBHOOK_SECRETS_PREVIOUS (old)
    monkeypatch.setenv("WEBHOOK_SECRET", "new-secret")
    monkeypatch.setenv("WEBHOOK_SECRETS_PREVIOUS", "old-secret")
    get_settings.cache_clear()
    secrets = get_settings().webhook_secrets
    assert secrets == (b"new-secret", b"old-secret")
    body, headers = delivery(secrets)
    # Then the request carries both signatures, and either secret verifies it
    assert len(headers["webhook-signature"].split()) == 2
    verify = readme_verify()
    assert verify(b"new-secret", headers, body) and verify(b"old-secret", headers, body)
    assert not verify(b"third", headers, body)


def test_a_whsec_secret_is_base64_and_a_bad_one_fails_at_start(monkeypatch):
    from redundancy.config import load_settings
    from redundancy.errors import ConfigurationError

    key = base64.b64encode(b"raw key bytes").decode()
    assert load_settings(webhook_secret=f"whsec_{key}").webhook_secrets == (b"raw key bytes",)
    with pytest.raises(ConfigurationError, match=r"WEBHOOK_SECRET.*base64"):
        load_settings(webhook_secret="whsec_not base64!")
