"""Signed webhook delivery: one attempt at a time, the retry policy, and the target check.

Every attempt POSTs the same JSON body (the ``batch.completed`` event) with::

    Content-Type: application/json
    X-Webhook-Id: <delivery id, the same on every attempt: dedupe on it>
    X-Webhook-Event: batch.completed
    X-Webhook-Event-Id: <the event's event_id>
    X-Webhook-Timestamp: <unix seconds of this attempt>
    X-Webhook-Signature: sha256=<hex HMAC-SHA256(WEBHOOK_SECRET, body)>

2xx is delivered; 5xx, timeouts and connection errors are retried with exponential
back-off and jitter (``redundancy.retry.webhook_retry``); 4xx (and redirects, never
followed) fail at once. Targets resolving to loopback, private, link-local or other
non-public addresses are refused unless WEBHOOK_ALLOWED_HOSTS lists the host or a
network holding every address; the request then goes to the address that was checked,
so a second DNS answer cannot redirect it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from redundancy.events.errors import WebhookRefusedError
from redundancy.events.wire import sign

USER_AGENT = "content-redundancy-detector-webhooks/1"
ERROR_CHARS = 300

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Attempt:
    """The outcome of one POST."""

    delivered: bool
    retryable: bool
    status_code: int | None = None
    error: str | None = None


def endpoint_id(url: str) -> str:
    """A stable id for a webhook URL that does not reveal it (tokens often sit in URLs)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def delivery_id(event_id: str, url: str) -> str:
    """The same id on every attempt and every re-run of one event's delivery to one URL."""
    return str(uuid.uuid5(uuid.UUID(event_id), url))


def _allowed(host: str, address: IPAddress, allow_list: Sequence[str]) -> bool:
    for entry in allow_list:
        if entry == host:
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def resolve_target(url: str, allow_list: Sequence[str]) -> list[IPAddress]:
    """Every address ``url``'s host resolves to, all public or allow-listed; else refuse."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefusedError(f"not an http(s) URL: {parts.scheme}://{parts.hostname}")
    host = parts.hostname.lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise WebhookRefusedError(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    for address in addresses:
        if not address.is_global and not _allowed(host, address, allow_list):
            raise WebhookRefusedError(
                f"{host} resolves to {address}, which is not a public address; add it to "
                "WEBHOOK_ALLOWED_HOSTS to allow it"
            )
    return addresses


def signed_headers(
    body: bytes, secret: bytes | None, *, event_id: str, event_type: str, delivery: str
) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Webhook-Id": delivery,
        "X-Webhook-Event": event_type,
        "X-Webhook-Event-Id": event_id,
        "X-Webhook-Timestamp": str(int(time.time())),
    }
    if secret:
        headers["X-Webhook-Signature"] = sign(secret, body)
    return headers


def post_once(
    url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_list: Sequence[str]
) -> Attempt:
    """One POST to the checked address. Raises WebhookRefusedError for a refused target."""
    import httpx

    address = resolve_target(url, allow_list)[0]
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            response = client.post(
                pinned,
                content=body,
                headers={**headers, "Host": host_header},
                extensions=extensions,
            )
    except httpx.TransportError as exc:  # timeouts, refused connections, resets
        return Attempt(False, True, None, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS])
    code = response.status_code
    if 200 <= code < 300:
        return Attempt(True, False, code)
    reason = f"HTTP {code}: {response.text[:200]}".strip()
    return Attempt(False, code >= 500, code, reason[:ERROR_CHARS])
