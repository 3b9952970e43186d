"""Prometheus metrics: celery-exporter's task metrics, our own, and the worker endpoint.

Names and labels of the ``celery_*`` metrics are those of danihodovic/celery-exporter,
so its Grafana dashboards and the celery-mixin alerts work unchanged; ours are prefixed
``redundancy_``. Every metric is a module-level object on prometheus_client's default
registry -- so are the events' and the cache's -- and in a worker with a metrics port
every process writes them to the worker's multiprocess folder (see ``multiproc``).

The worker main process serves one ``/metrics`` endpoint that reads the folder. Before
each scrape, and every ``METRICS_INTERVAL`` seconds, files of pool processes that have
exited are *compacted*: their counters and histograms are added into one archive file
per type and the files deleted, their gauges dropped (``mark_process_dead`` and the
rest). Totals stay exact while ``worker_max_tasks_per_child`` replaces processes, and
the folder holds a bounded number of files.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from redundancy.observability.multiproc import multiprocess_folder, pid_alive

log = logging.getLogger(__name__)

TASK_LABELS = ("name", "hostname", "queue_name")

# --- celery-exporter's task metrics (names, labels and help as in its source) ---------
# celery_task_sent_total is counted from task-sent events by one worker (``sent``) and
# exported by WorkerStateCollector.
TASK_RECEIVED = Counter(
    "celery_task_received", "Sent when the worker receives a task.", TASK_LABELS
)
TASK_STARTED = Counter(
    "celery_task_started", "Sent just before the worker executes the task.", TASK_LABELS
)
TASK_SUCCEEDED = Counter(
    "celery_task_succeeded", "Sent if the task executed successfully.", TASK_LABELS
)
TASK_FAILED = Counter(
    "celery_task_failed",
    "Sent if the execution of the task failed.",
    ("name", "hostname", "exception", "queue_name"),
)
TASK_REJECTED = Counter(
    "celery_task_rejected",
    "The task was rejected by the worker, possibly to be re-queued or moved to a dead "
    "letter queue.",
    TASK_LABELS,
)
TASK_REVOKED = Counter("celery_task_revoked", "Sent if the task has been revoked.", TASK_LABELS)
TASK_RETRIED = Counter(
    "celery_task_retried",
    "Sent if the task failed, but will be retried in the future.",
    TASK_LABELS,
)
SECONDS_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
"""prometheus_client's default buckets (celery-exporter's) extended to an hour: batch
shards run for minutes and a backlog waits longer, beyond the default 10 s top bucket."""
TASK_RUNTIME = Histogram(
    "celery_task_runtime",
    "Histogram of task runtime measurements.",
    TASK_LABELS,
    buckets=SECONDS_BUCKETS,
)
TASK_QUEUE_WAIT = Histogram(
    "celery_task_queue_wait_time",
    "Histogram of task queue wait time measurements (publish, or ETA, to start).",
    TASK_LABELS,
    buckets=SECONDS_BUCKETS,
)
STATE_COUNTERS = (
    TASK_RECEIVED,
    TASK_STARTED,
    TASK_SUCCEEDED,
    TASK_REJECTED,
    TASK_REVOKED,
    TASK_RETRIED,
)
"""Counters celery-exporter shows at 0 for every task it has seen (failed has no such row)."""

# --- ours ------------------------------------------------------------------------------
REDUNDANCY_SCORE = Histogram(
    "redundancy_score",
    "redundancy_score of every text analysed (0..1).",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
DOCUMENTS_ANALYSED = Counter(
    "redundancy_documents_analysed", "Texts analysed (single analyses and batch items)."
)
DOCUMENTS_FAILED = Counter(
    "redundancy_documents_failed",
    "Texts that could not be analysed: invalid input of analyze_content, failed batch items.",
)
NEAR_DUPLICATE_PAIRS = Counter(
    "redundancy_near_duplicate_pairs",
    "Near-duplicate pairs found: kind=sentence inside analysed texts, kind=document in batches.",
    ("kind",),
)
COMPARISONS = Counter(
    "redundancy_comparisons", "Two-text similarity comparisons.", ("algorithm", "similar")
)
BATCHES_COMPLETED = Counter("redundancy_batches_completed", "Batches merged into a result.")
MESSAGES_REJECTED = Counter(
    "redundancy_messages_rejected",
    "Task messages the message guard rejected before any task ran, by reason "
    "(undecodable, refused_content, malformed_body, malformed_headers; malformed_envelope: "
    "a Redis broker entry that is not a kombu envelope); each is dead-lettered.",
    ("reason",),
)
HOOK_ERRORS_HELP = "Errors caught in observability hooks (they never fail a job)."
HOOK_ERRORS = Counter("redundancy_hook_errors", HOOK_ERRORS_HELP, ("hook",))


class _ThreadErrors:
    """Hook errors of the worker main process's background threads (scrape, monitor).

    Those threads never touch prometheus_client's multiprocess values: a pool process
    forked while a thread holds that library's process-wide lock would inherit it held
    and hang on its first metric. They count here instead (under a lock that only the
    main process uses), and the endpoint adds these counts to
    ``redundancy_hook_errors_total``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def count(self, hook: str) -> None:
        with self._lock:
            self._counts[hook] = self._counts.get(hook, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


THREAD_ERRORS = _ThreadErrors()


def sample_names(family: Metric) -> set[str]:
    """The names a metric family is exposed under (``_total``, ``_bucket`` ...)."""
    name = family.name
    if family.type == "counter":
        return {f"{name}_total", f"{name}_created"}
    if family.type == "histogram":
        return {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
    if family.type == "summary":
        return {name, f"{name}_sum", f"{name}_count", f"{name}_created"}
    return {name}


def exported_names(collectors: Iterable[Collector] | None = None) -> set[str]:
    """Every sample name our processes expose: the default registry plus the worker's
    own collector (dashboards and alert rules are checked against this)."""
    if collectors is None:
        families = [*REGISTRY.collect(), *WorkerStateCollector(WorkerState()).describe()]
    else:
        families = [f for c in collectors for f in c.collect()]
    return {n for family in families for n in sample_names(family)}


# --- worker state, read at scrape time in the main process ---------------------------


@dataclass
class WorkerState:
    """What the worker main process knows, for the gauges computed at scrape time."""

    hostname: str = ""
    ready: bool = False
    connected: bool = False
    """The consumer holds a broker connection (a consumer bootstep keeps this current)."""
    concurrency: int = 0
    queues: list[str] = field(default_factory=list)
    queue_lengths: dict[str, int] | None = None
    consumer_counts: dict[str, int] | None = None
    sent: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """task-sent events counted by this worker: ``(name, hostname, queue_name) -> n``."""
    sent_lock: threading.Lock = field(default_factory=threading.Lock)


class WorkerStateCollector:
    """celery-exporter's worker and queue gauges and its sent counter, from the main
    process's live state.

    ``celery_active_worker_count`` / ``celery_active_process_count`` are this worker's
    share (1 and its pool size per consumed queue): ``sum by (queue_name)`` over all
    workers gives celery-exporter's cluster-wide value. Queue lengths come from the one
    worker holding the queue-reporter lease, so ``sum by (queue_name)`` is right too.
    """

    def __init__(self, state: WorkerState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        return [*self._families(), self._sent_family()]

    def collect(self) -> Iterator[Metric]:
        from celery.worker.state import active_requests

        s = self.state
        up, active, workers, processes, lengths, consumers = self._families()
        sent = self._sent_family()
        if s.hostname:  # up: ready and connected to the broker (0 while it reconnects)
            up.add_metric([s.hostname], 1.0 if s.ready and s.connected else 0.0)
            active.add_metric([s.hostname], float(len(active_requests)))
            for queue in s.queues:
                workers.add_metric([queue], 1.0)
                processes.add_metric([queue], float(s.concurrency))
        for queue, length in sorted((s.queue_lengths or {}).items()):
            lengths.add_metric([queue], float(length))
        for queue, count in sorted((s.consumer_counts or {}).items()):
            consumers.add_metric([queue], float(count))
        with s.sent_lock:
            counted = sorted(s.sent.items())
        for labels, count in counted:
            sent.add_metric(list(labels), float(count))
        yield from (up, active, workers, processes, lengths, consumers, sent)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "celery_worker_up",
                "Indicates if a worker has recently sent a heartbeat.",
                labels=["hostname"],
            ),
            GaugeMetricFamily(
                "celery_worker_tasks_active",
                "The number of tasks the worker is currently processing",
                labels=["hostname"],
            ),
            GaugeMetricFamily(
                "celery_active_worker_count",
                "The number of active workers in broker queue.",
                labels=["queue_name"],
            ),
            GaugeMetricFamily(
                "celery_active_process_count",
                "The number of active processes in broker queue.",
                labels=["queue_name"],
            ),
            GaugeMetricFamily(
                "celery_queue_length",
                "The number of message in broker queue.",
                labels=["queue_name"],
            ),
            GaugeMetricFamily(
                "celery_active_consumer_count",
                "The number of active consumer in broker queue.",
                labels=["queue_name"],
            ),
        )

    @staticmethod
    def _sent_family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "celery_task_sent", "Sent when a task message is published.", labels=list(TASK_LABELS)
        )


# --- multiprocess folder: compaction and the endpoint ---------------------------------

ARCHIVE = "archive"
_compact_lock = threading.Lock()


def _file_pid(path: Path) -> int | None:
    last = path.stem.rsplit("_", 1)[-1]
    return int(last) if last.isdigit() else None


def compact_dead_processes(folder: Path) -> int:
    """Fold files of exited processes into the archive files; returns files removed.

    Counters, histograms and summaries are summed into ``<type>_archive.db`` (their
    values are totals, which must survive the process); gauges of a dead process are
    dropped. Only the worker main process calls this, under a lock.
    """
    removed = 0
    with _compact_lock:
        dead = {
            pid
            for f in folder.glob("*.db")
            if (pid := _file_pid(f)) is not None and pid != os.getpid() and not pid_alive(pid)
        }
        for pid in sorted(dead):
            mark_process_dead(pid, str(folder))
            for f in folder.glob(f"*_{pid}.db"):
                kind = f.name.split("_", 1)[0]
                if kind != "gauge":
                    _add_into(folder / f"{kind}_{ARCHIVE}.db", f)
                f.unlink(missing_ok=True)
                removed += 1
    return removed


def _add_into(archive_path: Path, dead_file: Path) -> None:
    values = MmapedDict.read_all_values_from_file(str(dead_file))
    archive = MmapedDict(str(archive_path))
    try:
        for key, value, _ts, _pos in values:
            current, _ = archive.read_value(key)
            archive.write_value(key, current + value, 0.0)
    finally:
        archive.close()


def compact_safely(folder: Path) -> None:
    """``compact_dead_processes``, a failure logged and counted instead of raised."""
    try:
        compact_dead_processes(folder)
    except Exception:
        log.warning("metric file compaction failed", exc_info=True)
        THREAD_ERRORS.count("metrics_compaction")


class CompactingMultiProcessCollector(MultiProcessCollector):
    """The folder's metrics, compacted first so exited processes are counted once."""

    def __init__(self, folder: Path) -> None:
        super().__init__(None, str(folder))  # type: ignore[no-untyped-call]
        self.folder = folder

    def collect(self) -> Iterable[Metric]:
        compact_safely(self.folder)  # never lose the scrape over compaction
        with _compact_lock:
            families = list(super().collect())  # type: ignore[no-untyped-call]
        return _with_thread_errors(families, THREAD_ERRORS.snapshot())


def _with_thread_errors(families: list[Metric], errors: dict[str, int]) -> list[Metric]:
    if not errors:
        return families
    name = "redundancy_hook_errors"
    family = next((f for f in families if f.name == name), None)
    if family is None:
        family = Metric(name, HOOK_ERRORS_HELP, "counter")
        families.append(family)
    sample_name = f"{name}_total"
    for hook, count in sorted(errors.items()):
        for i, existing in enumerate(family.samples):
            if existing.name == sample_name and existing.labels == {"hook": hook}:
                family.samples[i] = existing._replace(value=existing.value + count)
                break
        else:
            family.add_sample(sample_name, {"hook": hook}, float(count))
    return families


def multiprocess_enabled() -> bool:
    from prometheus_client import values

    return bool(getattr(values.ValueClass, "_multiprocess", False))


def worker_registry(state: WorkerState) -> CollectorRegistry:
    """The registry a worker's endpoint serves: every process's files plus live state."""
    folder = multiprocess_folder()
    if folder is None or not multiprocess_enabled():
        raise RuntimeError(
            "worker metrics need prometheus multiprocess mode: set WORKER_METRICS_PORT (or "
            "use crd worker --metrics-port) before the app is imported"
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CompactingMultiProcessCollector(folder))
    registry.register(WorkerStateCollector(state))
    return registry


@dataclass
class MetricsServer:
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(registry: CollectorRegistry, port: int, address: str) -> MetricsServer:
    """Serve ``registry`` on http://address:port/metrics from a daemon thread."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, address, registry=registry)
    return MetricsServer(server, thread)


def push_to_gateway(url: str, job: str, grouping_key: dict[str, str]) -> None:
    """Add this process's counters to a Pushgateway (for short-lived producers)."""
    from prometheus_client import pushadd_to_gateway

    pushadd_to_gateway(url, job=job, registry=REGISTRY, grouping_key=grouping_key, timeout=5)


__all__ = [
    "CompactingMultiProcessCollector",
    "WorkerState",
    "WorkerStateCollector",
    "compact_dead_processes",
    "exported_names",
    "push_to_gateway",
    "serve",
    "worker_registry",
]
