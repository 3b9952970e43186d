"""Shared test set-up.

Unit tests run on the embedded default, so every setting from the developer's shell --
each variable ``redundancy.config.Settings`` reads, and those of the services and
libraries we configure (``OTEL_*``, ``PROMETHEUS_*``, ``FLOWER_*``, ``CELERY_CONFIG_MODULE``,
``LOG_FORMAT`` ...; see ``is_service_setting``) -- is removed before the package is used.
Service fixtures (in ``tests/services.py``) skip a missing service on a laptop and fail
under ``CI=true``.
"""

from __future__ import annotations

import os

import pytest

# An external Kafka for the integration tests survives the clean-up under a test name
# (before tests.services is imported: it reads that name).
if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
    os.environ.setdefault("CRD_TEST_KAFKA_BOOTSTRAP_SERVERS", os.environ["KAFKA_BOOTSTRAP_SERVERS"])

pytest.register_assert_rewrite("tests.services")  # imported here, before it is a plugin
from tests.services import is_service_setting  # noqa: E402

for _var in list(os.environ):
    if is_service_setting(_var):
        del os.environ[_var]

pytest_plugins = ["tests.services"]
