"""Shared test set-up.

Unit tests run on the embedded default, so any broker settings from the developer's shell
are removed before the package is imported. Service fixtures (in ``tests/services.py``)
skip a missing service on a laptop and fail under ``CI=true``.
"""

from __future__ import annotations

import os

# An external Kafka for the integration tests survives the clean-up under a test name.
if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
    os.environ.setdefault("CRD_TEST_KAFKA_BOOTSTRAP_SERVERS", os.environ["KAFKA_BOOTSTRAP_SERVERS"])

for _var in list(os.environ):
    if _var.startswith(
        ("CELERY_", "REDIS_", "RABBITMQ_", "KAFKA_", "MESSAGE_BROKER_", "CACHE_", "SESSION_")
    ):
        del os.environ[_var]

pytest_plugins = ["tests.services"]
