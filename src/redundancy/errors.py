"""One root error class for the whole project (dramatiq's convention).

Exceptions travel through Celery's JSON result backend as ``(type, module, args)`` and are
rebuilt on the caller's side, so every class here takes a single human-readable message.
"""

from __future__ import annotations


class RedundancyError(Exception):
    """Root of every error this project raises on purpose."""


class InvalidInputError(RedundancyError, ValueError):
    """The caller's input can never succeed: fail at once, never retry."""


class EmptyTextError(InvalidInputError):
    """Text that is empty or only whitespace."""


class TextTooLargeError(InvalidInputError):
    """Text longer than the configured limit (``MAX_TEXT_CHARS``)."""


class NotTextError(InvalidInputError):
    """Input that is not text (bytes, numbers, undecodable files)."""


class WorkLimitError(InvalidInputError):
    """Input whose comparison would cost more than the documented work limits."""


class ConfigurationError(RedundancyError):
    """A setting is missing or malformed; the message names the variable."""


class InfrastructureError(RedundancyError):
    """A service (broker, Redis, Kafka) is unreachable: worth retrying with backoff."""


class JobInterruptedError(RedundancyError):
    """The producer was interrupted (Ctrl+C); the message says what became of the job."""


class PoisonMessageError(RedundancyError):
    """A task message was delivered too many times (it keeps killing workers)."""


class MalformedMessageError(InvalidInputError):
    """A task message that is not a Celery message of ours: undecodable, a refused
    serializer (pickle, YAML), or the wrong shape. Rejected before it reaches a task."""
