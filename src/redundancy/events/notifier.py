"""The webhook notifier: an event handler that POSTs subscribed events to their URLs.

``WEBHOOK_SUBSCRIPTIONS`` lists ``{"url": ..., "events": [types, or "*"]}``. Each POST is
the event's JSON, signed as the batch webhook is (Standard Webhooks: ``webhook-id`` is
the same on every try of one event to one URL, so receivers dedupe on it), to a target
checked as every webhook target is (``redundancy.events.webhooks.resolve_target``).
A 5xx or a timeout is retried by the handler runner, then dead-lettered; a refused
target or a 4xx is dead-lettered at once. With several subscriptions, a retry POSTs
again to those that already answered (the same ``webhook-id``).
"""

from __future__ import annotations

import logging

from redundancy.errors import InfrastructureError, InvalidInputError
from redundancy.events import metrics
from redundancy.events.errors import WebhookRefusedError
from redundancy.events.handlers import handler
from redundancy.events.models import DomainEvent
from redundancy.events.webhooks import delivery_id, post_once, signed_headers

log = logging.getLogger(__name__)

NAME = "webhook-notifier"


class WebhookFailedError(InfrastructureError):
    """A subscriber answered 5xx or not at all: worth another try."""


class WebhookRejectedError(InvalidInputError):
    """A subscriber refused the event (4xx, a redirect) or its target is not allowed."""


def _subscribed() -> bool:
    """Whether WEBHOOK_SUBSCRIPTIONS lists any; an unknown event type in it is refused
    with a did-you-mean (checked when the handler runner starts)."""
    import difflib

    from redundancy.config import get_settings
    from redundancy.errors import ConfigurationError
    from redundancy.events.models import EVENT_TYPES

    subscriptions = get_settings().webhook_subscription_list
    for name in sorted({e for s in subscriptions for e in s.events} - {"*", *EVENT_TYPES}):
        close = difflib.get_close_matches(name, EVENT_TYPES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigurationError(f"WEBHOOK_SUBSCRIPTIONS: unknown event type {name!r}{hint}")
    return bool(subscriptions)


@handler(name=NAME, when=_subscribed)
def notify(event: DomainEvent) -> None:
    """POST ``event`` to every subscription of its type (none: nothing to do)."""
    from redundancy.config import get_settings

    settings = get_settings()
    urls = [
        s.url
        for s in settings.webhook_subscription_list
        if "*" in s.events or event.event_type in s.events
    ]
    if not urls:
        return
    body = event.to_json()
    problems: list[Exception] = []
    for url in urls:
        delivery = delivery_id(str(event.event_id), url)
        headers = signed_headers(
            body,
            settings.webhook_secrets,
            event_id=str(event.event_id),
            event_type=event.event_type,
            delivery=delivery,
        )
        try:
            attempt = post_once(
                url,
                body,
                headers,
                timeout=settings.webhook_timeout,
                allow_list=settings.webhook_allow_list,
                allowed_ports=settings.webhook_ports,
            )
        except WebhookRefusedError as exc:
            metrics.WEBHOOK_DELIVERIES.labels("refused").inc()
            problems.append(WebhookRejectedError(f"webhook {delivery} refused: {exc}"))
            continue
        if attempt.delivered:
            metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
            continue
        metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
        error = f"webhook {delivery} to {_host(url)}: {attempt.error}"
        problems.append(WebhookFailedError(error) if attempt.retryable else
                        WebhookRejectedError(error))  # fmt: skip
    retryable = [p for p in problems if isinstance(p, WebhookFailedError)]
    if retryable:  # try again (the refused ones are logged with the dead letter if any)
        raise retryable[0]
    if problems:
        raise problems[0]


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "?"
