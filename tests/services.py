"""Real services for integration tests, and real worker processes.

``require(...)`` skips when a service is missing on a laptop and fails under ``CI=true``,
where a missing service means a broken set-up, never a green run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.kafka import KillableKafka, kafka_answers, session_kafka  # noqa: F401
from tests.procs import (  # noqa: F401  (re-exported for the tests)
    PrivatePrometheus,
    PrivateRedis,
    PrivateRedisCluster,
    PrivateServer,
    ServerMissing,
    free_port,
    port_open,
)

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
ROOT = Path(__file__).resolve().parents[1]
REDIS_HOST = os.environ.get("CRD_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("CRD_TEST_REDIS_PORT", "6379"))
RABBITMQ_URL = os.environ.get("CRD_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
# Four databases reserved for the tests on the shared Redis (flushed by the fixtures):
# base+0 broker, base+1 result backend, base+2 cache/sessions, base+3 event streams.
# Give concurrent test runs on one machine different bases (0, 4, 8, 12).
REDIS_DB_BASE = int(os.environ.get("CRD_TEST_REDIS_DB_BASE", "12"))
REDIS_BROKER_DB = REDIS_DB_BASE
REDIS_BACKEND_DB = REDIS_DB_BASE + 1
REDIS_CACHE_DB = REDIS_DB_BASE + 2
REDIS_EVENTS_DB = REDIS_DB_BASE + 3
REDIS_CORPUS_DB = REDIS_EVENTS_DB
"""Corpora (index and Redis event store) share the event streams' test database."""


SERVICE_PREFIXES = (
    "CELERY_",
    "REDIS_",
    "RABBITMQ_",
    "KAFKA_",
    "MESSAGE_BROKER_",
    "CACHE_",
    "SESSION_",
    "OTEL_",
    "PROMETHEUS_",
    "FLOWER_",
)
"""Variables of the services and libraries we configure (CELERY_CONFIG_MODULE included)."""


def _settings_variables() -> frozenset[str]:
    # redundancy.config imports only pydantic (no Celery, no broker); nothing is read from
    # the environment until Settings is instantiated.
    from redundancy.config import Settings

    return frozenset(name.upper() for name in Settings.model_fields)


SETTINGS_VARIABLES = _settings_variables()
"""Every environment variable ``redundancy.config.Settings`` reads (case-insensitively)."""


def is_service_setting(name: str) -> bool:
    """True for an environment variable that configures this project or its services: the
    tests' processes never inherit one from the developer's shell."""
    upper = name.upper()
    return upper in SETTINGS_VARIABLES or upper.startswith(SERVICE_PREFIXES)


def require(available: bool, what: str) -> None:
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is not available, and CI=true requires it", pytrace=False)
    pytest.skip(f"{what} is not available")


S = TypeVar("S", bound=PrivateServer)


def started(server: S) -> S:
    """``server.start()``, a missing binary skipping the test (failing it under CI=true)."""
    try:
        server.start()
    except ServerMissing as exc:
        require(False, str(exc))
    return server


def redis_url(db: int, port: int = REDIS_PORT) -> str:
    return f"redis://{REDIS_HOST}:{port}/{db}"


@pytest.fixture(scope="session")
def redis_server() -> str:
    """The machine's Redis; returns its base URL (no database)."""
    require(port_open(REDIS_HOST, REDIS_PORT), f"Redis on {REDIS_HOST}:{REDIS_PORT}")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}"


@pytest.fixture(scope="session")
def rabbitmq_server() -> str:
    from kombu import Connection

    ok = True
    try:
        with Connection(RABBITMQ_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception:
        ok = False
    require(ok, f"RabbitMQ at {RABBITMQ_URL}")
    return RABBITMQ_URL


def flush_db(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def purge_queues(broker_url: str) -> None:
    """Delete our queues (and the dead-letter queue) so a previous run's leftovers cannot
    answer this run's tests; workers and producers declare them again, with this
    version's arguments (RabbitMQ refuses to redeclare a queue with other ones)."""
    from kombu import Connection

    from redundancy.workers.routing import DEAD_LETTER_QUEUE, QUEUES

    with Connection(broker_url) as conn:
        channel = conn.channel()
        for name in (*QUEUES, DEAD_LETTER_QUEUE):
            try:
                channel.queue_delete(name)
            except Exception:
                channel = conn.channel()  # a missing queue closes the channel on RabbitMQ


@dataclass
class Cluster:
    """A broker + backend pair with helpers to run producers and workers against it."""

    broker_url: str
    backend_url: str
    tmp: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not is_service_setting(k)}
        env.update(
            CELERY_BROKER_URL=self.broker_url,
            CELERY_RESULT_BACKEND=self.backend_url,
            PYTHONPATH=str(ROOT),
        )
        env.update(self.extra_env)
        env.update(extra)
        return {k: v for k, v in env.items() if v != ""}  # "" means: unset it

    def start_worker(
        self, concurrency: int = 2, cli_args: tuple[str, ...] = (), **extra_env: str
    ) -> Worker:
        """``crd worker`` in its own process group; ``cli_args`` go on its command line."""
        log = self.tmp / f"worker-{uuid.uuid4().hex[:8]}.log"
        name = f"test-{uuid.uuid4().hex[:8]}@%h"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "redundancy",
                "worker",
                f"--concurrency={concurrency}",
                f"--hostname={name}",
                "--without-mingle",
                "--without-gossip",
                *cli_args,
            ],
            env=self.env(**extra_env),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
            start_new_session=True,  # its own process group: killable with its children
        )
        worker = Worker(proc, log, name.replace("%h", socket.gethostname()))
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def start_plain_worker(self, *args: str, **extra_env: str) -> Worker:
        """``celery -A redundancy.workers worker`` (Celery's own command line, not
        ``crd worker``) with one process; ``args`` go on its command line."""
        hostname = f"plain-{uuid.uuid4().hex[:8]}@{socket.gethostname()}"
        log = self.tmp / f"plain-{uuid.uuid4().hex[:8]}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "redundancy.workers", "worker",
             f"--hostname={hostname}", "--concurrency=1", "--without-mingle",
             "--without-gossip", "--loglevel=INFO", *args],
            env=self.env(**extra_env),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
            start_new_session=True,
        )  # fmt: skip
        worker = Worker(proc, log, hostname)
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def producer(self, code: str, timeout: float = 120, **extra_env: str) -> Any:
        """Run ``code`` in a fresh Python process as a real producer; it must print JSON."""
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=self.env(**extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp,
            check=False,
        )
        assert out.returncode == 0, f"producer failed:\n{out.stdout}\n{out.stderr}"
        return json.loads(out.stdout.strip().splitlines()[-1])

    def crd(
        self, *args: str, timeout: float = 300, **extra_env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "redundancy", *args],
            env=self.env(**extra_env),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            check=False,
        )

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    hostname: str = ""

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.log.read_text()}")
            if " ready." in self.log.read_text():
                return
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout} s:\n{self.log.read_text()}")

    def text(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children): no clean shutdown."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self.kill()


@pytest.fixture(params=["redis", "memory"])
def kv_url(request: pytest.FixtureRequest) -> str:
    """A cache/sessions store URL: the shared Redis's test database (flushed), then the
    in-memory twin, so one test checks both behave alike."""
    if request.param == "memory":
        return "memory://"
    request.getfixturevalue("redis_server")
    url = redis_url(REDIS_CACHE_DB)
    flush_db(url)
    return url


@pytest.fixture
def redis_cluster(redis_server: str, tmp_path: Path) -> Iterator[Cluster]:
    """Redis as broker and result backend (two test databases, flushed)."""
    broker, backend = redis_url(REDIS_BROKER_DB), redis_url(REDIS_BACKEND_DB)
    flush_db(broker)
    flush_db(backend)
    cluster = Cluster(broker, backend, tmp_path)
    yield cluster
    cluster.stop()


@pytest.fixture
def rabbitmq_cluster(rabbitmq_server: str, redis_server: str, tmp_path: Path) -> Iterator[Cluster]:
    """RabbitMQ as broker, Redis as result backend."""
    backend = redis_url(REDIS_BACKEND_DB)
    flush_db(backend)
    purge_queues(rabbitmq_server)
    cluster = Cluster(rabbitmq_server, backend, tmp_path)
    yield cluster
    cluster.stop()


# --- corpora: a single Redis and a real 3-master Redis Cluster ---------------------------


@pytest.fixture(scope="session")
def redis_cluster_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedisCluster]:
    """A private Redis Cluster of 3 masters on free loopback ports, for the session."""
    cluster = PrivateRedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
    except ServerMissing as exc:
        require(False, str(exc))
    yield cluster
    cluster.stop()


def flush_corpus_redis(url: str) -> None:
    """Empty a corpus Redis: one database, or every primary of a cluster."""
    import redis
    from redis.cluster import RedisCluster

    single = redis.Redis.from_url(url)
    try:
        clustered = bool(single.info("cluster").get("cluster_enabled"))
        if not clustered:
            single.flushdb()
            return
    finally:
        single.close()
    cluster = RedisCluster.from_url(url)
    try:
        cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
    finally:
        cluster.close()


@pytest.fixture(params=["redis", "cluster"])
def corpus_redis_url(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """CORPUS_REDIS_URL set to an empty corpus Redis: the test database of the test Redis,
    then a real Redis Cluster, so one test checks both."""
    if request.param == "cluster":
        url = request.getfixturevalue("redis_cluster_server").url
    else:
        request.getfixturevalue("redis_server")
        url = redis_url(REDIS_CORPUS_DB)
    flush_corpus_redis(url)
    monkeypatch.setenv("CORPUS_REDIS_URL", url)
    from redundancy.config import get_settings
    from redundancy.corpus.connection import reset_clients

    get_settings.cache_clear()
    reset_clients()
    yield url
    reset_clients()
    get_settings.cache_clear()


# --- fault injection: private servers and cuttable ports ------------------------------


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = started(PrivateRedis(tmp_path))
    yield server
    server.stop()


class TcpProxy:
    """A loopback TCP relay whose port can be cut (connections dropped, new ones refused)
    and restored: a broker "made unreachable" without touching the shared server."""

    def __init__(self, target_host: str, target_port: int) -> None:
        import threading

        self.target = (target_host, target_port)
        self.port = free_port()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self._threading = threading

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                self._threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every open connection and refuse new ones (the port is closed)."""
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def restore(self) -> None:
        if self._listener is None:
            self.start()


@pytest.fixture
def tcp_proxy() -> Iterator[Any]:
    """Factory: ``tcp_proxy(host, port)`` -> a started TcpProxy, cut at teardown."""
    proxies: list[TcpProxy] = []

    def make(host: str, port: int) -> TcpProxy:
        proxy = TcpProxy(host, port)
        proxy.start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.cut()


# --- Kafka protocol: a real Kafka from KAFKA_BOOTSTRAP_SERVERS, else Tansu (tests/kafka.py)


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of the session's Kafka-protocol broker (see ``tests.kafka``)."""
    try:
        bootstrap, what, stop = session_kafka(tmp_path_factory.mktemp("kafka"))
    except ServerMissing as exc:
        require(False, str(exc))
        raise
    try:
        require(kafka_answers(bootstrap), what)
        yield bootstrap
    finally:
        stop()


# --- observability: a Prometheus scrape and an OTLP/HTTP trace receiver --------------


def scrape(url: str, timeout: float = 10) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """One Prometheus scrape, parsed: ``{(sample name, labels): value}``."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict[Any, float], metric: str, /, **labels: str) -> float | None:
    """The value of the one sample named ``metric`` whose labels include ``labels``."""
    found = [v for (n, ls), v in samples.items() if n == metric and set(labels.items()) <= set(ls)]
    assert len(found) <= 1, f"{metric}{labels} matches {len(found)} samples"
    return found[0] if found else None


@dataclass
class ReceivedSpan:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    service: str
    attributes: dict[str, Any]


class OtlpReceiver:
    """A loopback OTLP/HTTP endpoint that keeps every span it is sent, in memory."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.spans: list[ReceivedSpan] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._keep(request)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _keep(self, request: Any) -> None:
        from google.protobuf.json_format import MessageToDict

        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attributes = {
                        a["key"]: next(iter(a["value"].values()), None)
                        for a in MessageToDict(span).get("attributes", [])
                    }
                    self.spans.append(
                        ReceivedSpan(
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            kind=span.kind,
                            service=resource.get("service.name", ""),
                            attributes=attributes,
                        )
                    )

    def wait_for(self, predicate: Any, timeout: float = 30) -> list[ReceivedSpan]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [s for s in list(self.spans) if predicate(s)]
            if found:
                return found
            time.sleep(0.1)
        names = sorted({s.name for s in self.spans})
        raise TimeoutError(f"no matching span after {timeout} s; received: {names}")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    yield receiver
    receiver.stop()
