"""What travels: the event's JSON bytes, its key, and headers (type, id, signature).

The signature is ``sha256=<hex HMAC-SHA256(key, body)>`` over the exact body bytes, sent
beside the body (a Kafka/AMQP header, a Redis stream field), the same scheme as webhooks:
a receiver verifies the bytes it got without re-serialising anything. The key a producer
signs with (EVENTS_SIGNING_KEY) is resolved here too, so every path that builds a message
signs alike.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from redundancy.events.errors import InvalidEventError
from redundancy.events.models import DomainEvent, parse_event

SIGNATURE_PREFIX = "sha256="
CONTENT_TYPE = "application/json"

CONFIGURED: bytes = b"\x00configured-signing-key"
"""Default of every ``signing_key`` parameter: sign with EVENTS_SIGNING_KEY when one is
configured (``None`` means unsigned)."""


def configured_signing_key() -> bytes | None:
    """EVENTS_SIGNING_KEY as bytes, or None."""
    from redundancy.config import get_settings

    key = get_settings().events_signing_key
    return key.get_secret_value().encode() if key else None


def resolve_signing_key(signing_key: bytes | None) -> bytes | None:
    """``CONFIGURED`` -> EVENTS_SIGNING_KEY (or None); any other value as given."""
    return configured_signing_key() if signing_key is CONFIGURED else signing_key


def sign(key: bytes, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(key, body)."""
    return SIGNATURE_PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()


def signature_valid(key: bytes, body: bytes, signature: str | None) -> bool:
    """Constant-time check of a ``sha256=<hex>`` signature."""
    return bool(signature) and hmac.compare_digest(sign(key, body), str(signature))


@dataclass(frozen=True)
class WireMessage:
    """One event as every broker carries it."""

    event_id: str
    event_type: str
    key: str
    body: bytes
    signature: str | None = None
    headers: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, event: DomainEvent, signing_key: bytes | None = None) -> WireMessage:
        body = event.to_json()
        return cls(
            event_id=str(event.event_id),
            event_type=event.event_type,
            key=event.aggregate_id,
            body=body,
            signature=sign(signing_key, body) if signing_key else None,
        )

    def transport_headers(self) -> dict[str, str]:
        """Headers for Kafka/AMQP: consumers can filter by type without parsing the body."""
        headers = {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "content_type": CONTENT_TYPE,
        }
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
                signature = raw.get(b"signature")
                return cls(
                    event_id=raw[b"event_id"].decode(),
                    event_type=raw[b"event_type"].decode(),
                    key=raw[b"key"].decode(),
                    body=raw[b"body"],
                    signature=signature.decode() if signature else None,
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
            )
        except KeyError as exc:
            name = exc.args[0].decode() if isinstance(exc.args[0], bytes) else exc.args[0]
            raise InvalidEventError(f"stream entry is missing or mangles {name!r}") from None
        except (UnicodeDecodeError, AttributeError) as exc:
            raise InvalidEventError(f"stream entry is missing or mangles {exc}") from None

    def event(self, signing_key: bytes | None = None) -> DomainEvent:
        """Parse the body; with a key, refuse a missing or wrong signature."""
        if signing_key is not None and not signature_valid(signing_key, self.body, self.signature):
            raise InvalidEventError(f"event {self.event_id}: missing or invalid signature")
        return parse_event(self.body)
