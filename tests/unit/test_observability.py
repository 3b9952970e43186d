"""Observability without services: correlation id, tracing (in-memory exporter), JSON
logs, multiprocess metric files and their compaction, settings, CLI and doctor."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from celery.signals import task_success

from redundancy.config import load_settings
from redundancy.core import phases
from redundancy.errors import ConfigurationError
from redundancy.observability import hooks
from redundancy.observability.context import (
    CORRELATION_HEADER,
    SENT_AT_HEADER,
    correlation_scope,
    current_correlation_id,
    current_trace_id,
)
from redundancy.observability.logs import use_json
from redundancy.observability.metrics import HOOK_ERRORS
from redundancy.observability.tracing import configure_tracing, get_tracer, shutdown_tracing

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- correlation id ----------------------------------------------------------------------


def test_publish_headers_keep_a_given_id_else_take_the_scope_or_a_new_one():
    given = {CORRELATION_HEADER: "from-caller"}
    hooks._stamp_headers(headers=given)
    assert given[CORRELATION_HEADER] == "from-caller" and given[SENT_AT_HEADER] > 0
    with correlation_scope("scope-id"):
        scoped: dict[str, Any] = {}
        hooks._stamp_headers(headers=scoped)
    assert scoped[CORRELATION_HEADER] == "scope-id"
    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    hooks._stamp_headers(headers=first)
    hooks._stamp_headers(headers=second)
    assert len(first[CORRELATION_HEADER]) == 32
    assert first[CORRELATION_HEADER] != second[CORRELATION_HEADER]


def test_scopes_nest_and_tasks_run_under_the_callers_correlation_id():
    from redundancy.tasks import analyze_content, process_batch

    seen: list[tuple[str, str | None]] = []

    def record(sender: Any = None, **_: Any) -> None:
        seen.append((sender.name, current_correlation_id()))

    task_success.connect(record, weak=False)
    try:
        with correlation_scope("outer") as outer:
            with correlation_scope() as inner:
                assert current_correlation_id() == inner != outer
            assert current_correlation_id() == "outer"
            analyze_content.delay("Same. Same.").get()
            process_batch.delay(["One text.", "One text!"]).get()
    finally:
        task_success.disconnect(record)
    assert current_correlation_id() is None
    assert {cid for _, cid in seen} == {"outer"}
    assert {name for name, _ in seen} >= {
        "redundancy.analyze_content",
        "redundancy.batch.analyze_chunk",
        "redundancy.batch.merge",
    }


def test_a_failing_hook_is_logged_and_counted_never_raised(caplog):
    @hooks.guarded("unit_test_hook")
    def broken() -> None:
        raise RuntimeError("boom")

    before = HOOK_ERRORS.labels("unit_test_hook")._value.get()
    with caplog.at_level(logging.WARNING):
        assert broken() is None
    assert HOOK_ERRORS.labels("unit_test_hook")._value.get() == before + 1
    assert "unit_test_hook failed" in caplog.text


# --- tracing -----------------------------------------------------------------------------


@pytest.mark.parametrize("long_phases", [True, False], ids=["long-phases", "short-phases"])
def test_task_runs_become_spans_with_the_core_phases_as_children_or_attributes(
    long_phases, monkeypatch
):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from redundancy.observability import tracing
    from redundancy.tasks import analyze_content, process_batch

    # Given phases that all last at least PHASE_SPAN_MIN_NS, or all less (the threshold
    # moved, rather than relying on how long a phase takes on this machine)
    monkeypatch.setattr(tracing, "PHASE_SPAN_MIN_NS", 0 if long_phases else 10**15)
    exporter = InMemorySpanExporter()
    assert configure_tracing("unit", exporter=exporter)
    try:
        # When an analysis and a batch run traced
        analyze_content.delay("The owl sat. The owl sat. Spans!").get()
        process_batch.delay(["A text. A text.", "Another text.", "A text. A text!"]).get()
        assert current_correlation_id() is None  # nothing leaks out of (nested) eager runs
        with get_tracer().start_as_current_span("outside a task") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            assert current_trace_id() == trace_id
    finally:
        shutdown_tracing()
    assert phases._hook is None and current_trace_id() is None
    spans = exporter.get_finished_spans()
    run = next(s for s in spans if s.name == "run/redundancy.analyze_content")
    merge = next(s for s in spans if s.name == "run/redundancy.batch.merge")
    under_run = [s for s in spans if s.parent and s.parent.span_id == run.context.span_id]
    assert run.resource.attributes["service.name"] == "unit"
    if long_phases:
        # Then long phases are child spans of the run, timed within it
        assert {s.name for s in under_run} == {"redundancy.normalise", "redundancy.cdist"}
        assert all(run.start_time <= s.start_time <= s.end_time <= run.end_time for s in under_run)
        clustering = next(s for s in spans if s.name == "redundancy.clustering")
        assert clustering.parent.span_id == merge.context.span_id
    else:
        # Then short phases are attributes of the run (ms), without spans of their own
        assert under_run == []
        assert run.attributes["redundancy.normalise_ms"] >= 0
        assert run.attributes["redundancy.cdist_ms"] >= 0
        assert merge.attributes["redundancy.clustering_ms"] >= 0
        assert not any(s.name.startswith("redundancy.") for s in spans)


def test_without_an_endpoint_tracing_stays_off():
    assert configure_tracing("unit", None) is False
    with get_tracer().start_as_current_span("noop"):
        assert current_trace_id() is None


# --- logs --------------------------------------------------------------------------------


def test_json_lines_carry_the_jobs_context():
    logger = logging.getLogger("test.json")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    stream = __import__("io").StringIO()
    logger.handlers = [logging.StreamHandler(stream)]
    use_json(logger)
    use_json(logger)  # idempotent: one context filter
    with correlation_scope("cid-1"):
        logger.warning("hello %s", "world", extra={"documents": 3})
    try:
        raise ValueError("bad")
    except ValueError:
        logger.exception("failed")
    context = {"id": "t1", "name": "n", "runtime": 0.5, "args": "('long',)", "return_value": "{}"}
    logger.info(
        "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
        context,
        extra={"data": context},
    )
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert third["message"] == "Task n[t1] succeeded in 0.5s: {}"
    assert third["data"] == {"id": "t1", "name": "n", "runtime": 0.5}  # no repeats
    assert first["message"] == "hello world" and first["level"] == "WARNING"
    assert first["logger"] == "test.json" and first["correlation_id"] == "cid-1"
    assert first["documents"] == 3 and first["timestamp"].endswith("+00:00")
    assert {"task_id", "task_name", "trace_id", "process"} <= first.keys()
    assert second["correlation_id"] is None and "ValueError: bad" in second["exc_info"]


def test_crd_logs_json_with_the_given_correlation_id():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "redundancy",
            "--log-format",
            "json",
            "--log-level",
            "INFO",
            "--correlation-id",
            "cid-cli",
            "compare",
            "--text",
            "a b",
            "a c",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("CELERY_")},
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert lines and {line["correlation_id"] for line in lines} == {"cid-cli"}
    assert json.loads(out.stdout)["algorithm"] == "ratio"


def test_crd_pushes_its_counters_to_a_pushgateway():
    received: list[tuple[str, str, str]] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            received.append((self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "redundancy", "compare", "--text", "a b", "a b"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=ROOT,
            env={
                **os.environ,
                "PROMETHEUS_PUSHGATEWAY": f"http://127.0.0.1:{server.server_address[1]}",
            },
        )
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == 0, out.stderr
    ((_method, path, body),) = received
    assert path.startswith("/metrics/job/crd/")
    assert f"/instance/{socket.gethostname()}" in path and "/command/compare" in path
    assert 'redundancy_comparisons_total{algorithm="ratio",similar="true"} 1.0' in body


# --- metric files --------------------------------------------------------------------------


def test_compaction_keeps_totals_of_exited_processes_and_removes_their_files(tmp_path):
    out = run_python(
        """
        import json, os
        from pathlib import Path
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from redundancy.observability.metrics import CompactingMultiProcessCollector

        folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        done = Counter("jobs", "jobs", ["kind"])
        took = Histogram("took", "took", buckets=(1, 2))
        level = Gauge("level", "level", multiprocess_mode="liveall")
        done.labels("main").inc()

        def child(n):
            pid = os.fork()
            if pid == 0:
                done.labels("child").inc(n)
                took.observe(1.5)
                level.set(n)
                os._exit(0)
            os.waitpid(pid, 0)

        for generation in range(3):       # children come and go (max_tasks_per_child)
            for n in (1, 2):
                child(n)
        registry = CollectorRegistry()
        registry.register(CompactingMultiProcessCollector(folder))
        values = {s.name + json.dumps(s.labels, sort_keys=True): s.value
                  for m in registry.collect() for s in m.samples}
        print(json.dumps({"values": values, "files": sorted(p.name for p in folder.iterdir()),
                          "pid": os.getpid()}))
    """,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    values = result["values"]
    assert values['jobs_total{"kind": "child"}'] == 9  # 3 generations x (1 + 2)
    assert values['jobs_total{"kind": "main"}'] == 1
    assert values['took_bucket{"le": "2.0"}'] == 6 and values["took_count{}"] == 6
    # gauges of exited processes are dropped: only the live main process's is left
    assert [k for k in values if k.startswith("level")] == [f'level{{"pid": "{result["pid"]}"}}']
    # files: the two archives and the main process's own, nothing of the children
    own = {
        f"counter_{result['pid']}.db",
        f"histogram_{result['pid']}.db",
        f"gauge_liveall_{result['pid']}.db",
    }
    assert set(result["files"]) == own | {"counter_archive.db", "histogram_archive.db"}


def test_metrics_folder_is_fresh_per_process_and_cleaned(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / str(gone.pid)
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"old")
    out = run_python(f"""
        import os, sys
        from redundancy.observability.multiproc import enable_multiprocess
        path = enable_multiprocess({str(tmp_path)!r})
        assert path.name == str(os.getpid()) and os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(path)
        assert enable_multiprocess({str(tmp_path)!r}) == path  # idempotent
        import prometheus_client
        from prometheus_client import Counter
        Counter("x", "x").inc()
        print(path)
    """)
    assert out.returncode == 0, out.stderr
    assert not stale.exists()  # a folder of a process that is gone
    assert not Path(out.stdout.strip()).exists()  # removed by its owner at exit
    # prometheus_client imported first (as Flower's celery command plugin does): metrics
    # created after the switch still go to files
    late = run_python(f"""
        import os
        import prometheus_client
        from redundancy.observability.multiproc import enable_multiprocess
        path = enable_multiprocess({str(tmp_path)!r})
        from redundancy.observability.metrics import DOCUMENTS_ANALYSED, multiprocess_enabled
        DOCUMENTS_ANALYSED.inc()
        print(multiprocess_enabled(), sorted(os.listdir(path)))
    """)
    assert late.returncode == 0, late.stderr
    assert late.stdout.split(" ", 1)[0] == "True" and "counter_" in late.stdout
    # but one of our metric modules imported first (its values in memory) is refused
    early = run_python(f"""
        import redundancy.cache.metrics
        from redundancy.observability.multiproc import enable_multiprocess
        enable_multiprocess({str(tmp_path)!r})
    """)
    assert early.returncode != 0
    assert "redundancy.cache.metrics created metrics before the metrics folder" in early.stderr


def test_a_worker_metrics_port_switches_the_app_to_multiprocess_mode(tmp_path):
    out = run_python(
        """
        from redundancy.workers import app  # builds the app
        from redundancy.observability.metrics import multiprocess_enabled
        from redundancy.observability.multiproc import multiprocess_folder
        print(multiprocess_enabled(), multiprocess_folder().parent)
    """,
        WORKER_METRICS_PORT="9808",
        METRICS_DIR=str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", str(tmp_path)]


# --- settings, CLI, doctor ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"worker_metrics_port": "99999"}, "WORKER_METRICS_PORT"),
        ({"log_format": "xml"}, "LOG_FORMAT"),
        ({"otel_exporter_otlp_endpoint": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ({"prometheus_pushgateway": "ftp://gw"}, "PROMETHEUS_PUSHGATEWAY"),
        ({"flower_basic_auth": "admin-without-password"}, "FLOWER_BASIC_AUTH"),
    ],
)
def test_bad_observability_settings_fail_naming_the_variable(env, message):
    with pytest.raises(ConfigurationError, match=message):
        load_settings(**env)


def test_a_malformed_flower_login_is_not_echoed():
    with pytest.raises(ConfigurationError) as err:
        load_settings(flower_basic_auth="ops:fine,secret-without-colon")
    assert "secret-without-colon" not in str(err.value)


def test_worker_refuses_a_metrics_port_in_use():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "redundancy", "worker", "--metrics-port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=ROOT,
            env={
                **os.environ,
                "CELERY_BROKER_URL": "redis://127.0.0.1:1/0",
                "METRICS_BIND_ADDRESS": "127.0.0.1",
            },
        )
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr


def test_doctor_checks_the_otlp_endpoint():
    from redundancy.cli.doctor import check_tracing

    assert check_tracing(load_settings()) is None
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        ok, detail = check_tracing(
            load_settings(otel_exporter_otlp_endpoint=f"http://127.0.0.1:{port}")
        )
        assert ok and "accepts connections" in detail
    ok, detail = check_tracing(
        load_settings(otel_exporter_otlp_endpoint=f"http://127.0.0.1:{port}")
    )
    assert not ok and "OTEL_EXPORTER_OTLP_ENDPOINT" in detail


def test_a_failing_queue_probe_reports_nothing_and_counts_off_the_metric_files():
    from kombu import Connection

    from redundancy.observability.metrics import (
        THREAD_ERRORS,
        WorkerState,
        _with_thread_errors,
    )
    from redundancy.observability.queues import WorkerMonitor

    class UnreachableBroker:
        class conf:  # mimics Celery's app.conf
            broker_transport_options: dict[str, Any] = {}

        def connection_for_read(self, **kwargs: Any) -> Connection:
            return Connection("redis://127.0.0.1:1/0", **kwargs)

    state = WorkerState(queue_lengths={"analysis": 7})
    before = THREAD_ERRORS.snapshot().get("queue_probe", 0)
    WorkerMonitor(UnreachableBroker(), state, ["analysis"], 1.0, lease=None).tick()
    assert state.queue_lengths is None  # no stale number
    assert THREAD_ERRORS.snapshot()["queue_probe"] == before + 1
    # the endpoint adds these counts to the hook-errors counter read from the files
    from prometheus_client.metrics_core import Metric

    family = Metric("redundancy_hook_errors", "help", "counter")
    family.add_sample("redundancy_hook_errors_total", {"hook": "queue_probe"}, 2.0)
    merged = _with_thread_errors([family], {"queue_probe": 3, "metrics_compaction": 1})
    values = {s.labels["hook"]: s.value for s in merged[0].samples}
    assert values == {"queue_probe": 5.0, "metrics_compaction": 1.0}


def test_task_messages_and_their_events_carry_a_summary_of_the_text_not_the_text(
    settings_env,
):
    # Given the app (in-memory transport, not eager), with and without a preview of the
    # first words, and a receiver of every published message's headers
    import hashlib

    from celery.signals import before_task_publish

    from redundancy.workers import create_app

    text = "Confidential report. " * 200
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    seen: list[dict] = []

    def keep(headers=None, **_):
        seen.append(dict(headers))

    before_task_publish.connect(keep, weak=False)
    try:
        for words, preview in ((0, ""), (2, ", 'Confidential report.'...")):
            settings_env(TASK_ARGS_PREVIEW_WORDS=str(words))
            app = create_app()
            app.conf.task_always_eager = False

            # When a producer sends an analysis, as .delay() and send_task do
            app.send_task(
                "redundancy.analyze_content", args=(text,),
                kwargs={"threshold": 0.8, "algorithm": "ratio"},
            )  # fmt: skip
            message = app.amqp.as_task_v2(
                "id-1", "redundancy.analyze_content", (text,), {}, create_sent_event=True
            )

            # Then its headers and its task-sent event show length and hash, not the text
            summary = f"(<text: 4,200 chars, sha256:{digest}{preview}>,)"
            assert seen[-1]["argsrepr"] == summary
            assert seen[-1]["kwargsrepr"] == "{'threshold': 0.8, 'algorithm': 'ratio'}"
            assert message.sent_event["args"] == summary
            assert list(message.body[0]) == [text]  # the task itself gets the whole text
    finally:
        before_task_publish.disconnect(keep)
    # a long text's hash covers a bounded prefix (its cost stays bounded), and says so
    from redundancy.workers.argsrepr import summarize

    long_text = "word " * 20_000
    digest = hashlib.sha256(long_text[:65_536].encode()).hexdigest()[:12]
    assert summarize(long_text) == f"<text: 100,000 chars, sha256 of the first 65,536:{digest}>"


def test_the_health_check_is_healthy_only_while_the_worker_is_up_and_connected():
    # Given a worker's metrics endpoint (its real collector) on a free port
    import socket

    from prometheus_client import CollectorRegistry, start_http_server

    from redundancy.observability.metrics import WorkerState, WorkerStateCollector

    state = WorkerState(hostname="crd@test", ready=True, connected=True)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerStateCollector(state))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, _thread = start_http_server(port, "127.0.0.1", registry=registry)

    def probe() -> int:
        cmd = [sys.executable, "-m", "redundancy.observability.health", str(port)]
        return subprocess.run(cmd, capture_output=True, check=False, timeout=30).returncode

    try:
        # When the probe runs: healthy while up and connected, not once the broker is lost
        assert probe() == 0
        state.connected = False
        assert probe() == 1
    finally:
        server.shutdown()
        server.server_close()
    # and not when nothing answers
    assert probe() == 1


def test_tracing_is_an_extra_and_its_absence_is_one_line_when_it_is_asked_for(tmp_path):
    # Given the package's requirements: only the OpenTelemetry API in a plain install
    import tomllib

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    plain = [d for d in project["dependencies"] if d.startswith("opentelemetry")]
    assert [d.split(">")[0] for d in plain] == ["opentelemetry-api"]
    extras = project["optional-dependencies"]
    assert {d.split(">")[0] for d in extras["tracing"]} == {
        "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http",
        "opentelemetry-instrumentation-celery",
    }  # fmt: skip
    assert "tracing" in extras["all"][0]

    # When crd runs where the extra is missing (its packages cannot be imported) but
    # OTEL_EXPORTER_OTLP_ENDPOINT asks for tracing
    script = tmp_path / "without_extra.py"
    script.write_text(
        textwrap.dedent("""
        import sys
        MISSING = ("opentelemetry.sdk", "opentelemetry.instrumentation", "opentelemetry.exporter")
        class WithoutTracingExtra:
            def find_spec(self, name, path=None, target=None):
                if name.startswith(MISSING):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None
        sys.meta_path.insert(0, WithoutTracingExtra())
        sys.argv = ["crd", "analyze", "-"]
        from redundancy.cli import main
        main()
    """)
    )
    out = subprocess.run(
        [sys.executable, str(script)], input="One. One.", capture_output=True, text=True,
        env={"PATH": os.environ["PATH"], "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        check=False, timeout=120,
    )  # fmt: skip

    # Then the job runs, and one line says how to get traces
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["redundancy_score"] == 0.5
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert "pip install 'content-redundancy-detector[tracing]'" in lines[0]


@pytest.mark.parametrize(
    "value", ["", "with space", "new\nline", "x" * 129, "ünï", "a;b", 42, None, {"a": 1}]
)
def test_a_correlation_id_has_one_shape_and_producers_are_refused_another(value):
    from redundancy.errors import InvalidInputError
    from redundancy.observability.context import usable_correlation_id

    assert usable_correlation_id(value) is None
    if isinstance(value, str) and value:
        with (
            pytest.raises(InvalidInputError, match="must be 1-128 characters"),
            correlation_scope(value),
        ):
            pass


def test_usable_correlation_ids_pass_unchanged():
    from redundancy.observability.context import new_correlation_id, usable_correlation_id

    for value in ("corr-analysis", "a.b:c_d-1", "x" * 128, new_correlation_id()):
        assert usable_correlation_id(value) == value
