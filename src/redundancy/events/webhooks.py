"""Signed webhook delivery: one attempt at a time, the retry policy, and the target check.

Every attempt POSTs the same JSON body (the ``batch.completed`` event), signed as
Standard Webhooks specifies, so a receiver can reject a replay and any library of that
standard verifies it::

    Content-Type: application/json
    webhook-id: <delivery id, the same on every attempt: dedupe on it>
    webhook-timestamp: <unix seconds of this attempt>
    webhook-signature: v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")> [...]
    X-Webhook-Event: batch.completed
    X-Webhook-Event-Id: <the event's event_id>

One signature per secret: WEBHOOK_SECRET, then during a rotation each of
WEBHOOK_SECRETS_PREVIOUS, so receivers holding either secret accept the request.

2xx is delivered; 5xx, timeouts and connection errors are retried with exponential
back-off and jitter (``redundancy.retry.webhook_retry``); 4xx (and redirects, never
followed) fail at once. A target must name a port of WEBHOOK_ALLOWED_PORTS (80 and 443
unless configured). Targets resolving to loopback, private, link-local or other
non-public addresses -- IPv6 forms that embed one (IPv4-mapped, -compatible and
-translated, 6to4, Teredo, NAT64) included -- are refused unless WEBHOOK_ALLOWED_HOSTS
lists the host or a network holding every address; the request then goes to the
address that was checked, so a second DNS answer cannot redirect it.
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
from redundancy.events.wire import sign, webhook_content

USER_AGENT = "content-redundancy-detector-webhooks/2"
ERROR_CHARS = 300

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

EMBEDDING_NETWORKS: tuple[ipaddress.IPv6Network, ...] = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # IPv4-compatible (deprecated): ::a.b.c.d
        "::ffff:0:0/96",  # IPv4-mapped: ::ffff:a.b.c.d
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT): ::ffff:0:a.b.c.d
        "64:ff9b::/96",  # NAT64, well-known prefix
        "64:ff9b:1::/48",  # NAT64, local-use prefix (RFC 8215)
    )
)
"""IPv6 networks whose last 32 bits are an IPv4 address some path may reach."""
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
"""Local-use NAT64: never a public destination, whatever it embeds."""


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, translated,
    NAT64, 6to4, Teredo server and client); [] for IPv4 and plain IPv6."""
    if address.version == 4:
        return []
    assert isinstance(address, ipaddress.IPv6Address)
    found = []
    if any(address in network for network in EMBEDDING_NETWORKS) and int(address) > 1:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    return found


def is_public(address: IPAddress) -> bool:
    """Globally reachable, and so is every IPv4 address it embeds."""
    if not address.is_global or address in LOCAL_NAT64:
        return False
    return all(inner.is_global for inner in embedded_ipv4(address))


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


DEFAULT_PORTS = frozenset({80, 443})


def resolve_target(
    url: str, allow_list: Sequence[str], allowed_ports: frozenset[int] = DEFAULT_PORTS
) -> list[IPAddress]:
    """Every address ``url``'s host resolves to, all public or allow-listed, on an allowed
    port; else refuse."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefusedError(f"not an http(s) URL: {parts.scheme}://{parts.hostname}")
    host = parts.hostname.lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookRefusedError(f"{host}: not a valid port in {parts.netloc!r}") from None
    if port not in allowed_ports:
        raise WebhookRefusedError(
            f"{host}: port {port} is not allowed; add it to WEBHOOK_ALLOWED_PORTS to allow it"
        )
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise WebhookRefusedError(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))
    for address in addresses:
        if not is_public(address) and not _allowed(host, address, allow_list):
            raise WebhookRefusedError(
                f"{host} resolves to {address}, which is not a public address; add it to "
                "WEBHOOK_ALLOWED_HOSTS to allow it"
            )
    return addresses


def signed_headers(
    body: bytes, secrets: Sequence[bytes], *, event_id: str, event_type: str, delivery: str
) -> dict[str, str]:
    """Headers of one attempt: Standard Webhooks' id, timestamp (now) and signatures."""
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": delivery,
        "webhook-timestamp": timestamp,
        "X-Webhook-Event": event_type,
        "X-Webhook-Event-Id": event_id,
    }
    if secrets:
        headers["webhook-signature"] = sign(secrets, webhook_content(delivery, timestamp, body))
    return headers


def post_once(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    allow_list: Sequence[str],
    allowed_ports: frozenset[int] = DEFAULT_PORTS,
) -> Attempt:
    """One POST to the checked address. Raises WebhookRefusedError for a refused target."""
    import httpx

    address = resolve_target(url, allow_list, allowed_ports)[0]
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
