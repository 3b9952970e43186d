"""Errors of the event layer, under the project's root classes."""

from __future__ import annotations

from redundancy.errors import (
    ConfigurationError,
    InfrastructureError,
    InvalidInputError,
    RedundancyError,
)


class BrokerUnavailableError(InfrastructureError):
    """The event broker cannot be reached or did not confirm in time: retry later."""


class PublishRejectedError(RedundancyError):
    """The event broker refused a message for good (e.g. too large): retrying cannot help."""


class InvalidEventError(RedundancyError, ValueError):
    """Bytes that are not an event of ours (bad JSON, unknown shape, bad signature)."""


class WebhookRefusedError(InvalidInputError):
    """The webhook target is not allowed (non-public address, bad URL): never retried."""


class MissingSigningKeyError(ConfigurationError):
    """A consumer would verify events but no signing key is configured."""


class MissingClientLibraryError(ConfigurationError):
    """An optional client library (confluent-kafka) is not installed."""
