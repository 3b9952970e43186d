"""What travels: the event's JSON bytes, its key, and headers (id, type, time, signature).

The signature authenticates the whole envelope as a receiver sees it, not only the body:
``v1,<base64 HMAC-SHA256(key, "<event_id>.<event_type>.<timestamp>.<body>")>`` -- the
Standard Webhooks scheme, which webhooks use too (over ``"<id>.<timestamp>.<body>"``).
So an event captured on the bus cannot be replayed under a new id (consumers dedupe on
the signed one) nor relabelled as another type, and a receiver verifies the bytes it got
without re-serialising anything. One key signs; during a key rotation every key of
``signing_keys`` signs (space-separated signatures, as Standard Webhooks does), so
consumers holding either the old or the new key accept the event whatever order
producers and consumers are updated in. ``signature_valid`` is the one verify function,
of events and webhooks alike.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from redundancy.events.errors import InvalidEventError
from redundancy.events.models import DomainEvent, parse_event

SIGNATURE_VERSION = "v1"
CONTENT_TYPE = "application/json"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")

CONFIGURED: bytes = b"\x00configured-signing-key"
"""Default of every ``signing_key`` parameter: the configured keys (EVENTS_SIGNING_KEY,
then EVENTS_SIGNING_KEYS_PREVIOUS); ``None`` means none (unsigned, unverified)."""

SigningKeys = bytes | Sequence[bytes] | None
"""One key, several (a rotation: the current one first), ``None``, or ``CONFIGURED``."""


def configured_signing_keys() -> tuple[bytes, ...]:
    """EVENTS_SIGNING_KEY then the EVENTS_SIGNING_KEYS_PREVIOUS ones, as bytes; () if none."""
    from redundancy.config import get_settings

    return get_settings().events_signing_keys


def resolve_signing_keys(signing_key: SigningKeys) -> tuple[bytes, ...]:
    """``CONFIGURED`` -> the configured keys; ``None`` -> none; a key or keys as given."""
    if signing_key is CONFIGURED:
        return configured_signing_keys()
    if signing_key is None:
        return ()
    if isinstance(signing_key, bytes | bytearray):
        return (bytes(signing_key),)
    return tuple(signing_key)


def event_content(event_id: str, event_type: str, timestamp: str, body: bytes) -> bytes:
    """What an event's signature covers: its id, type, signing time and body."""
    return f"{event_id}.{event_type}.{timestamp}.".encode() + body


def webhook_content(delivery_id: str, timestamp: str, body: bytes) -> bytes:
    """What a webhook's signature covers (Standard Webhooks): delivery id, time, body."""
    return f"{delivery_id}.{timestamp}.".encode() + body


def _mac(key: bytes, content: bytes) -> str:
    return base64.b64encode(hmac.digest(key, content, hashlib.sha256)).decode()


def sign(keys: SigningKeys, content: bytes) -> str:
    """``v1,<base64>`` per key, space-separated (the current key first)."""
    return " ".join(f"{SIGNATURE_VERSION},{_mac(k, content)}" for k in resolve_signing_keys(keys))


def signature_valid(keys: SigningKeys, content: bytes, signature: str | None) -> bool:
    """Does any ``v1,<base64>`` in ``signature`` match ``content`` under any of ``keys``?
    Constant-time per comparison; unknown versions are ignored (forward compatible)."""
    if not signature:
        return False
    offered = [
        part.partition(",")[2]
        for part in str(signature).split()
        if part.startswith(SIGNATURE_VERSION + ",")
    ]
    found = False
    for key in resolve_signing_keys(keys):
        expected = _mac(key, content)
        for candidate in offered:
            found |= hmac.compare_digest(expected, candidate)
    return found


def valid_timestamp(timestamp: str | None) -> bool:
    """Unix seconds as decimal digits (what every signed time must be)."""
    return isinstance(timestamp, str) and _TIMESTAMP.fullmatch(timestamp) is not None


@dataclass(frozen=True)
class WireMessage:
    """One event as every broker carries it."""

    event_id: str
    event_type: str
    key: str
    body: bytes
    signature: str | None = None
    timestamp: str | None = None
    """Unix seconds when it was signed (serialised): part of what the signature covers."""
    headers: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, event: DomainEvent, signing_key: SigningKeys = None) -> WireMessage:
        """``event`` serialised and signed with ``signing_key`` (None: unsigned)."""
        body = event.to_json()
        event_id, timestamp = str(event.event_id), str(int(time.time()))
        keys = resolve_signing_keys(signing_key)
        content = event_content(event_id, event.event_type, timestamp, body)
        return cls(
            event_id=event_id,
            event_type=event.event_type,
            key=event.aggregate_id,
            body=body,
            signature=sign(keys, content) if keys else None,
            timestamp=timestamp,
        )

    def signed_content(self) -> bytes:
        return event_content(self.event_id, self.event_type, self.timestamp or "", self.body)

    def transport_headers(self) -> dict[str, str]:
        """Headers for Kafka/AMQP: consumers can filter by type without parsing the body."""
        headers = {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "content_type": CONTENT_TYPE,
        }
        if self.timestamp:
            headers["timestamp"] = self.timestamp
        if self.signature:
            headers["signature"] = self.signature
        return headers

    def fields(self) -> dict[str, str | bytes]:
        """Flat fields for a Redis stream entry (the outbox and the Redis Streams broker)."""
        out: dict[str, str | bytes] = {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "key": self.key,
            "body": self.body,
        }
        if self.timestamp:
            out["timestamp"] = self.timestamp
        if self.signature:
            out["signature"] = self.signature
        return out

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes] | dict[str, str]) -> WireMessage:
        """A stream entry's fields (bytes from redis-py, or str) as a message. The relay
        reads every event through here, so the common case (bytes) is a few lookups."""
        try:
            raw: dict[Any, Any] = fields
            if b"body" in raw:  # redis-py: bytes keys and values
                signature, timestamp = raw.get(b"signature"), raw.get(b"timestamp")
                return cls(
                    event_id=raw[b"event_id"].decode(),
                    event_type=raw[b"event_type"].decode(),
                    key=raw[b"key"].decode(),
                    body=raw[b"body"],
                    signature=signature.decode() if signature else None,
                    timestamp=timestamp.decode() if timestamp else None,
                )
            f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
            text = {
                k: (v.decode() if isinstance(v, bytes) and k != "body" else v) for k, v in f.items()
            }
            body = text["body"]
            return cls(
                event_id=str(text["event_id"]),
                event_type=str(text["event_type"]),
                key=str(text["key"]),
                body=body if isinstance(body, bytes) else str(body).encode(),
                signature=str(text["signature"]) if text.get("signature") else None,
                timestamp=str(text["timestamp"]) if text.get("timestamp") else None,
            )
        except KeyError as exc:
            name = exc.args[0].decode() if isinstance(exc.args[0], bytes) else exc.args[0]
            raise InvalidEventError(f"stream entry is missing or mangles {name!r}") from None
        except (UnicodeDecodeError, AttributeError) as exc:
            raise InvalidEventError(f"stream entry is missing or mangles {exc}") from None

    def event(self, signing_keys: SigningKeys = None) -> DomainEvent:
        """The event, once it proved what it claims to be.

        With keys, a missing or wrong signature (over id, type, time and body) is refused;
        always, an envelope whose id or type differ from the headers it travelled under
        (a relabelled event) is refused, so filters and dedupe act on what was signed.
        """
        keys = resolve_signing_keys(signing_keys)
        if keys and not (
            valid_timestamp(self.timestamp)
            and signature_valid(keys, self.signed_content(), self.signature)
        ):
            raise InvalidEventError(f"event {self.event_id}: missing or invalid signature")
        event = parse_event(self.body)
        if str(event.event_id) != self.event_id or event.event_type != self.event_type:
            raise InvalidEventError(
                f"event {self.event_id} ({self.event_type}) carries the envelope of "
                f"{event.event_id} ({event.event_type}): relabelled"
            )
        return event
