"""Webhook delivery as a task: one POST per run, retried by Celery with back-off.

Waiting between attempts happens on the broker (a countdown), not in a pool process;
the embedded default sleeps the same delay in-process. The task always returns a report
(delivered, failed or refused), which the events signal handlers turn into ``webhook.delivered``.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import urlsplit

from redundancy import names
from redundancy.config import get_settings
from redundancy.events import metrics
from redundancy.events.errors import WebhookRefusedError
from redundancy.events.webhooks import endpoint_id, post_once, signed_headers
from redundancy.retry import webhook_retry
from redundancy.workers import app

log = logging.getLogger(__name__)


def delivery_task_id(batch_id: str) -> str:
    """The id of a batch's webhook delivery task, so the producer can read its report."""
    return f"{batch_id}-webhook"


@app.task(name=names.WEBHOOK_DELIVER, bind=True, autoretry_for=())
def deliver_webhook(
    self: Any,
    url: str,
    body: str,
    *,
    event_id: str,
    event_type: str,
    delivery_id: str,
    aggregate_id: str | None = None,
) -> dict[str, Any]:
    """POST ``body`` to ``url``; returns the delivery report once the outcome is final."""
    settings = get_settings()
    attempt = (self.request.retries or 0) + 1
    secrets = settings.webhook_secrets
    if not secrets:
        log.warning("WEBHOOK_SECRET is not set: webhook %s goes out unsigned", delivery_id)
    payload = body.encode()
    report: dict[str, Any] = {
        "endpoint_id": endpoint_id(url),
        "delivery_id": delivery_id,
        "delivered_event_id": event_id,
        "host": urlsplit(url).hostname,
        "aggregate_id": aggregate_id,
    }
    headers = signed_headers(
        payload, secrets, event_id=event_id, event_type=event_type, delivery=delivery_id
    )
    try:
        outcome = post_once(
            url,
            payload,
            headers,
            timeout=settings.webhook_timeout,
            allow_list=settings.webhook_allow_list,
            allowed_ports=settings.webhook_ports,
        )
    except WebhookRefusedError as exc:
        log.warning("webhook %s refused: %s", delivery_id, exc)
        metrics.WEBHOOK_DELIVERIES.labels("refused").inc()
        return {**report, "status": "refused", "attempts": attempt - 1, "error": str(exc)}
    retry = webhook_retry(settings)
    if outcome.retryable and retry.retries_after(attempt):
        delay = retry.delay(attempt)
        log.info(
            "webhook %s attempt %d failed (%s); retry in %.1f s",
            delivery_id,
            attempt,
            outcome.error,
            delay,
        )
        if self.request.is_eager:
            time.sleep(delay)
        raise self.retry(countdown=delay, max_retries=settings.webhook_max_attempts - 1)
    status = "delivered" if outcome.delivered else "failed"
    metrics.WEBHOOK_DELIVERIES.labels(status).inc()
    if not outcome.delivered:
        log.warning("webhook %s failed after %d attempts: %s", delivery_id, attempt, outcome.error)
    return {
        **report,
        "status": status,
        "attempts": attempt,
        "status_code": outcome.status_code,
        "error": outcome.error,
    }
