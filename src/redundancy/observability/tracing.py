"""OpenTelemetry tracing: Celery instrumentation, core phase spans, OTLP export.

On only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (OTLP over HTTP/protobuf, the
collector's port 4318; the standard ``OTEL_EXPORTER_OTLP_*`` and ``OTEL_BSP_*`` variables
tune the exporter and batching) and the ``tracing`` extra is installed (the SDK, the OTLP
exporter and the Celery instrumentation; the package itself needs only the API). With it
unset nothing is installed and spans cost nothing; set without the extra, one warning
says how to install it.

opentelemetry-instrumentation-celery makes a PRODUCER span around every publish (and
puts the W3C ``traceparent`` in the message headers) and a CONSUMER span around every
task run, a child of the producer's; the core's phases (normalise, cdist, clustering)
become child spans of the run when they take 1 ms or more, and attributes of the run
(``redundancy.<phase>_ms``) when shorter (``PHASE_SPAN_MIN_NS``).

Per process, after fork: producers set tracing up when the app is created; a worker's
main process tears that down before its pool forks (it runs no task), and every pool
process sets up its own provider, exporter thread and HTTP session in
``worker_process_init`` and flushes them in ``worker_process_shutdown``. The provider is
ours, not the global one (which can be set only once per process and would be inherited
across fork); code that wants its own spans asks ``get_tracer()``.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace

from redundancy.core import phases

log = logging.getLogger(__name__)

TRACER_NAME = "redundancy"


@dataclass
class _Tracing:
    pid: int
    provider: Any
    tracer: trace.Tracer


_active: _Tracing | None = None


def tracing_active() -> bool:
    return _active is not None and _active.pid == os.getpid()


def configure_tracing(
    service_name: str, endpoint: str | None = None, *, exporter: Any = None
) -> bool:
    """Set up tracing in this process (idempotent per process).

    ``exporter`` replaces the OTLP exporter (tests pass an in-memory one); without
    either an endpoint or an exporter nothing happens and False is returned.
    """
    global _active
    if tracing_active():
        return True
    if exporter is None and not endpoint:
        return False
    try:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        _hint_missing_extra(exc)
        return False

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")  # type: ignore[union-attr]
    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name}), shutdown_on_exit=True
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    instrumentor = CeleryInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(tracer_provider=provider)
    tracer = provider.get_tracer(TRACER_NAME)
    phases.set_phase_hook(_phase_span(tracer))
    _active = _Tracing(os.getpid(), provider, tracer)
    return True


TRACING_EXTRA_HINT = (
    "OTEL_EXPORTER_OTLP_ENDPOINT is set but tracing is not installed ({missing}); no traces "
    "are sent: pip install 'content-redundancy-detector[tracing]'"
)
_hinted = False


def _hint_missing_extra(exc: ImportError) -> None:
    """One warning per process: tracing is asked for, but its extra is not installed."""
    global _hinted
    if not _hinted:
        _hinted = True
        log.warning(TRACING_EXTRA_HINT.format(missing=exc.name or exc))


def shutdown_tracing() -> None:
    """Flush pending spans and remove the instrumentation (process exit, or before fork)."""
    global _active
    state, _active = _active, None
    if state is None:
        return
    phases.set_phase_hook(None)
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    instrumentor = CeleryInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    if state.pid == os.getpid():
        state.provider.shutdown()  # flushes the batch processor


def tracer_provider() -> Any | None:
    """This process's tracer provider while tracing is on (to instrument an ASGI app)."""
    return _active.provider if tracing_active() and _active is not None else None


def get_tracer() -> trace.Tracer:
    """Our tracer when tracing is on in this process, else a no-op one."""
    if _active is not None and _active.pid == os.getpid():
        return _active.tracer
    return trace.NoOpTracer()


PHASE_SPAN_MIN_NS = 1_000_000
"""A core phase shorter than this (1 ms) is recorded as an attribute of the task's span
(``redundancy.<phase>_ms``) rather than as a span of its own: a span costs ~0.1 ms of
CPU to make and export, which for a short text is more than the phase itself, and every
analysis of a short text has two. A longer phase gets its child span, with its times."""


def _phase_span(tracer: trace.Tracer) -> Any:
    names: dict[str, tuple[str, str]] = {}

    def hook(name: str) -> AbstractContextManager[object]:
        parent = trace.get_current_span()
        if not parent.is_recording():
            return _NOT_TRACED  # outside a traced job, or a job sampled out
        labels = names.get(name) or names.setdefault(
            name, (f"redundancy.{name}", f"redundancy.{name}_ms")
        )
        return _Phase(tracer, parent, *labels)

    return hook


_NOT_TRACED = nullcontext()


class _Phase:
    """Times a core phase; at its end, an attribute of the current span (a short phase)
    or a child span with the phase's start and end times (a long one, or a failed one).
    Not made current itself (phases contain no spans), which keeps it cheap."""

    __slots__ = ("_parent", "_started", "_tracer", "attribute", "name")

    def __init__(self, tracer: trace.Tracer, parent: trace.Span, name: str, attribute: str) -> None:
        self._tracer, self._parent, self.name, self.attribute = tracer, parent, name, attribute

    def __enter__(self) -> object:
        self._started = time.time_ns()
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        ended = time.time_ns()
        if exc is None and ended - self._started < PHASE_SPAN_MIN_NS:
            self._parent.set_attribute(self.attribute, (ended - self._started) / 1e6)
            return
        span = self._tracer.start_span(self.name, start_time=self._started)
        if exc is not None and span.is_recording():
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
        span.end(end_time=ended)


__all__ = [
    "configure_tracing",
    "get_tracer",
    "shutdown_tracing",
    "tracer_provider",
    "tracing_active",
]
