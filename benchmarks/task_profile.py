"""Where a worker's time per task goes: py-spy samples of every process of a 2-process
prefork worker while it runs N prefilled tasks, sorted into the parts of a task.

    python -m benchmarks.task_profile [--tasks 3000] [--contender crd_analyze_content]
        [--rate 500] [--redis-port 6379]

The worker, its warm-up and the prefilled queue are ``benchmarks.e2e_tasks``'s (same
contenders). ``py-spy record`` samples each pool process, the main process and (for
``crd``) the outbox relay at ``--rate`` Hz. Each sample goes to the innermost part of its
stack that ``PARTS`` names; the JSON gives, per process kind, the µs per task of each
part (samples / rate / tasks). Samples are wall clock (``--idle``): a Redis round trip
counts where the process waits for it, and a process waiting for work outside any task
is no task's cost and is left out. Sampling perturbs the worker a little (py-spy reads the
processes' memory): the breakdown is a share of the time, not a rate.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import stop_process_group, synthetic_docs, write_result
from benchmarks.e2e_tasks import WARM_UP_TASKS, Harness, contenders

PY_SPY = str(Path(sys.executable).with_name("py-spy"))

# (part, pattern on one frame "function (file:line)"). A sample belongs to the innermost
# frame matching an OWNER (the code that asked for the work: our hooks, Celery's result
# store ...), else to the innermost frame matching a LIBRARY part, else to "other".
OWNERS: tuple[tuple[str, str], ...] = (
    ("core analysis", r"^analyze \(.*(redundancy/core/analysis|benchmarks/plain_celery)\.py"),
    ("result model to JSON dict", r"model_dump"),
    ("input validation", r"redundancy/schemas\.py|^validate_text \("),
    ("results cache (lookup, store)", r"redundancy/cache/|redundancy/kv/"),
    ("delivery counter", r"redundancy/workers/(base|deliveries)\.py"),
    ("events: build, sign, outbox write", r"redundancy/events/"),
    ("metrics and correlation hooks", r"redundancy/observability/"),
    ("logging", r"/logging/__init__\.py|pythonjsonlogger"),
    ("Celery: result store", r"^\w+\.mark_as_done \("),
    ("Celery: STARTED state store", r"^\w+\.store_result \(.*celery/backends/"),
    ("Celery: task events", r"celery/events/"),
    ("Celery: ack", r"^Request\.acknowledge|^\w+\.ack \("),
    ("Celery: signal dispatch", r"celery/utils/dispatch/"),
)
LIBRARIES: tuple[tuple[str, str], ...] = (
    ("Celery: task tracing", r"celery/app/trace\.py"),
    ("pool: job and result messages", r"billiard/|celery/concurrency/"),
    ("broker: receive (kombu, redis-py)", r"kombu/|redis/"),
    ("Celery: consumer and strategy", r"celery/worker/"),
)
IDLE_LEAF = re.compile(r"(^|\.)(select|poll|_poll|wait|_wait_for_tstate_lock|_recv|sleep) \(")
IDLE = "waiting (no task's cost)"

Compiled = list[tuple[str, re.Pattern[str]]]


def compiled(parts: tuple[tuple[str, str], ...]) -> Compiled:
    return [(p, re.compile(r)) for p, r in parts]


def innermost(frames: list[str], parts: Compiled) -> str | None:
    for frame in reversed(frames):
        for part, pattern in parts:
            if pattern.search(frame):
                return part
    return None


WAITING_FOR_WORK = re.compile(r"^(RedisOutbox|MemoryOutbox)\.wait \(|^Event\.wait \(")
"""The relay waiting for new outbox entries, or lingering between batches."""
SLEEPING_THREAD = re.compile(r"^_share_when_idle \(")
"""A pool process's cache-statistics thread between its once-a-second flushes (its own
frame is the leaf while ``time.sleep`` runs, so IDLE_LEAF does not see it)."""


def classify(frames: list[str], owners: Compiled, libraries: Compiled) -> str:
    """The part of one sample; a process waiting for work outside any task is idle."""
    in_task = any("celery/app/trace.py" in f for f in frames)
    if not in_task and IDLE_LEAF.search(frames[-1]) and "redis/" not in ";".join(frames[-6:]):
        return IDLE
    if any(WAITING_FOR_WORK.search(f) for f in frames) or SLEEPING_THREAD.search(frames[-1]):
        return IDLE
    part = innermost(frames, owners) or innermost(frames, libraries) or "other"
    if part == "Celery: STARTED state store" and any(".mark_as_done (" in f for f in frames):
        return "Celery: result store"  # mark_as_done stores through store_result
    return part


def read_samples(path: Path) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    if not path.exists():
        return stacks
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def breakdown(stacks: Counter[tuple[str, ...]], rate: int, tasks: int) -> dict[str, float]:
    owners, libraries = compiled(OWNERS), compiled(LIBRARIES)
    parts: Counter[str] = Counter()
    for frames, n in stacks.items():
        parts[classify(list(frames), owners, libraries)] += n
    parts.pop(IDLE, None)
    return {p: round(n / rate / tasks * 1e6, 1) for p, n in parts.most_common()}


def processes(main: psutil.Process) -> dict[str, list[int]]:
    kinds: dict[str, list[int]] = {"main": [main.pid], "pool": [], "relay": []}
    for child in main.children(recursive=True):
        cmd = " ".join(child.cmdline())
        kinds["relay" if "redundancy.events.relay" in cmd else "pool"].append(child.pid)
    return kinds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--contender", default="crd_analyze_content")
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument(
        "--redis-port", type=int, default=int(os.environ.get("CRD_TEST_REDIS_PORT", "6379"))
    )
    parser.add_argument(
        "--redis-db-base", type=int, default=int(os.environ.get("CRD_TEST_REDIS_DB_BASE", "12"))
    )
    args = parser.parse_args()
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CELERY_", "REDIS_", "MESSAGE_BROKER", "EVENTS_", "OTEL_", "LOG_"))
    }
    h = Harness(args.redis_port, args.redis_db_base, base_env)
    crd_env = {"REDIS_URL": h.redis_url, "MESSAGE_BROKER_TYPE": "redis_streams"}
    [c] = [c for c in contenders(["three_way", "settings"], crd_env) if c.name == args.contender]
    texts = [
        ". ".join(d[i : i + 60] for i in range(0, len(d), 60)) + "."
        for d in synthetic_docs(args.tasks + WARM_UP_TASKS, 300, seed=4)
    ]
    out_dir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    h.flush()
    warm = h.stage(c, texts[:WARM_UP_TASKS])
    worker = subprocess.Popen(
        [sys.executable, *c.argv],
        env={**h.base_env, **c.env},
        cwd=Path(__file__).resolve().parents[1],
        stdout=(out_dir / "worker.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    spies: list[tuple[str, subprocess.Popen[bytes], Path]] = []
    try:
        h.release(c.queue)
        h.wait_results(warm, 120)
        keys = h.stage(c, texts[WARM_UP_TASKS:])
        for kind, pids in processes(psutil.Process(worker.pid)).items():
            for pid in pids:
                path = out_dir / f"{kind}-{pid}.txt"
                spy = subprocess.Popen(
                    [PY_SPY, "record", "--pid", str(pid), "--idle", "--nonblocking",
                     "--rate", str(args.rate), "--format", "raw", "--output", str(path)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
                spies.append((kind, spy, path))
        time.sleep(1.0)  # py-spy attaches
        began = time.perf_counter()
        h.release(c.queue)
        elapsed = h.wait_results(keys, 600) - began
        for _, spy, _ in spies:
            spy.send_signal(signal.SIGINT)
        for _, spy, _ in spies:
            spy.wait(timeout=60)
    finally:
        stop_process_group(worker)
        h.flush()
    # Samples taken before the release or after the last result are idle; only the busy
    # parts per task matter, so the idle parts are dropped below.
    merged: dict[str, Counter[tuple[str, ...]]] = {}
    for kind, _, path in spies:
        merged.setdefault(kind, Counter()).update(read_samples(path))
    n = len(keys)
    result: dict[str, Any] = {
        "contender": c.name,
        "tasks": n,
        "tasks_per_s_while_sampled": n / elapsed,
        "rate_hz": args.rate,
        "load_avg_1m": os.getloadavg()[0],
    }
    for kind, stacks in merged.items():
        parts = breakdown(stacks, args.rate, n)
        result[f"{kind}_us_per_task"] = parts
        result[f"{kind}_busy_us_per_task"] = round(sum(parts.values()), 1)
    write_result(f"task_profile_{c.name}", result)


if __name__ == "__main__":
    main()
