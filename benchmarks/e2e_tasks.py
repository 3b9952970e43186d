"""End-to-end tasks/s of our worker against plain Celery, measured by one harness in one run.

    python -m benchmarks.e2e_tasks [--tasks 1000] [--rounds 5] [--redis-port 6379]
        [--parts three_way,settings]

Every contender is a 2-process prefork worker on one Redis (broker and result backend):

* ``plain_noop_defaults``: a plain Celery app (``benchmarks.plain_celery``, no project
  code), Celery's defaults, a no-op task -- what Celery itself costs per task;
* ``plain_analyze_defaults``: the same app and defaults running the core's ``analyze``;
* ``plain_analyze_ours``: the same app with the Celery settings our worker uses
  (``plain_celery.OURS``) and the same ``analyze`` on the same texts;
* ``crd_analyze_content``: ``crd worker -c 2`` running ``analyze_content`` as shipped:
  results cache on Redis (every text distinct: all misses), events on (outbox, and the
  relay beside the worker to Redis Streams), INFO logs, no tracing, no metrics port.

``--parts settings`` adds the plain app running ``analyze`` with one settings group of
``plain_celery.SETTING_GROUPS`` at a time: what each of our settings costs.
``--parts ablation`` adds ``crd worker`` with one of its parts off at a time (results
cache, events; INFO logs, run at WARNING like plain Celery's default): what each part
of ours costs. ``--before-src PATH`` adds the same
``crd worker`` run from another checkout's ``src`` (e.g. ``git archive`` of an older
commit): before and after in one run.

How a round measures one contender: its worker is started and warmed up (a few tasks
through each process); N messages, produced beforehand into a staging database, are then
pushed onto its queue in one ``LPUSH`` (prefilled: no producer competes with the worker),
and the clock runs until every task's result is in the result backend (polled with one
``EXISTS`` of all N keys every 5 ms). Worker CPU time (main process, pool processes and
our outbox relay, psutil) is recorded for the same window: on a machine shared with
other work it varies far less than wall time. Rounds interleave the contenders (rotating
who goes first) so load changes hit all of them alike; the JSON keeps every round, and
medians and ratios of medians are reported with the spread. The Redis commands each task
cost (every process of the worker, from ``INFO commandstats``) are counted too: unlike
time, they do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis
from celery import Celery

from benchmarks.common import stop_process_group, synthetic_docs, write_result

ROOT = Path(__file__).resolve().parents[1]
WARM_UP_TASKS = 20
POLL_EVERY = 0.005


@dataclass(frozen=True)
class Contender:
    name: str
    argv: tuple[str, ...]
    task: str
    queue: str
    env: dict[str, str] = field(default_factory=dict)


def plain(name: str, task: str, settings: str) -> Contender:
    return Contender(
        name,
        (
            "-m", "celery", "-A", "benchmarks.plain_celery", "worker", "--pool=prefork",
            "--concurrency=2", "-Q", "plain", "--without-mingle", "--without-gossip",
            f"--hostname={name}-{os.getpid()}@%h",
        ),
        task,
        "plain",
        {"PLAIN_CELERY_SETTINGS": settings},
    )  # fmt: skip


def crd(name: str, task: str, env: dict[str, str], level: str = "INFO") -> Contender:
    return Contender(
        name,
        (
            "-m", "redundancy", "worker", "-c", "2", "-Q", "analysis", "-l", level,
            "--without-mingle", "--without-gossip", f"--hostname={name}-{os.getpid()}@%h",
        ),
        task,
        "analysis",
        env,
    )  # fmt: skip


def contenders(
    parts: list[str], crd_env: dict[str, str], before_src: str | None = None
) -> list[Contender]:
    from benchmarks.plain_celery import SETTING_GROUPS

    out: list[Contender] = []
    if before_src:  # the same worker from an older checkout's src/ (first on sys.path)
        before_env = {**crd_env, "PYTHONPATH": f"{before_src}:{ROOT}"}
        out.append(crd("crd_before", "redundancy.analyze_content", before_env))
    if "three_way" in parts:
        out += [
            plain("plain_noop_defaults", "plain.noop", "defaults"),
            plain("plain_analyze_defaults", "plain.analyze", "defaults"),
            plain("plain_analyze_ours", "plain.analyze", "ours"),
            crd("crd_analyze_content", "redundancy.analyze_content", crd_env),
        ]
    if "ablation" in parts:  # our worker with one of its parts off: what each part costs
        if "three_way" not in parts:
            out += [
                plain("plain_analyze_ours", "plain.analyze", "ours"),
                crd("crd_analyze_content", "redundancy.analyze_content", crd_env),
            ]
        analyze = "redundancy.analyze_content"
        out += [
            crd("crd_without_cache", analyze, {**crd_env, "CACHE_RESULTS": "false"}),
            crd("crd_without_events", analyze, {**crd_env, "EVENTS_ENABLED": "false"}),
            crd("crd_warning_logs", analyze, crd_env, level="WARNING"),
        ]
    if "settings" in parts:
        if "three_way" not in parts:
            out.append(plain("plain_analyze_defaults", "plain.analyze", "defaults"))
        out += [plain(f"plain_analyze_{g}", "plain.analyze", g) for g in SETTING_GROUPS]
    return out


class Harness:
    """Databases on one Redis: broker, results, staging (messages made beforehand), and
    our cache/sessions/events database."""

    def __init__(self, port: int, db_base: int, base_env: dict[str, str]) -> None:
        server = f"redis://127.0.0.1:{port}"
        self.broker_url = f"{server}/{db_base}"
        self.backend_url = f"{server}/{db_base + 1}"
        self.staging_url = f"{server}/{db_base + 2}"
        self.redis_url = f"{server}/{db_base + 3}"
        self.urls = (self.broker_url, self.backend_url, self.staging_url, self.redis_url)
        self.broker = redis.Redis.from_url(self.broker_url)
        self.backend = redis.Redis.from_url(self.backend_url)
        self.staging = redis.Redis.from_url(self.staging_url)
        self.producer = Celery(broker=self.staging_url)
        self.base_env = {
            **base_env,
            "CELERY_BROKER_URL": self.broker_url,
            "CELERY_RESULT_BACKEND": self.backend_url,
            "PYTHONPATH": str(ROOT),
        }

    def flush(self) -> None:
        for url in self.urls:
            redis.Redis.from_url(url).flushdb()

    def stage(self, contender: Contender, texts: list[str]) -> list[str]:
        """Messages for ``texts`` in the staging database; returns their result keys."""
        self.staging.delete(contender.queue)
        ids = [
            self.producer.send_task(contender.task, args=(t,), queue=contender.queue).id
            for t in texts
        ]
        return [f"celery-task-meta-{i}" for i in ids]

    def release(self, queue: str) -> None:
        """Move every staged message onto the worker's queue at once."""
        messages = self.staging.lrange(queue, 0, -1)
        self.broker.lpush(queue, *messages)

    def wait_results(self, result_keys: list[str], timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while self.backend.exists(*result_keys) < len(result_keys):
            if time.monotonic() > deadline:
                done = self.backend.exists(*result_keys)
                raise SystemExit(f"only {done} of {len(result_keys)} results after {timeout} s")
            time.sleep(POLL_EVERY)
        return time.perf_counter()


def command_counts(client: redis.Redis) -> dict[str, int]:
    """Calls per Redis command since the server started (INFO commandstats)."""
    stats = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def commands_per_task(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, float]:
    """Redis commands the worker sent per task (every database of the server), without
    the harness's own polling (EXISTS) and INFO."""
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return {
        k: round(v / n, 2)
        for k, v in sorted(delta.items(), key=lambda kv: -kv[1])
        if v and k not in ("exists", "info")
    }


def cpu_seconds(root: psutil.Process) -> dict[str, float]:
    """CPU seconds so far of the worker's processes: its main process, its pool processes
    and (ours) the outbox relay beside it."""
    out = {"main": 0.0, "pool": 0.0, "relay": 0.0}
    for proc in [root, *root.children(recursive=True)]:
        try:
            kind = "main" if proc.pid == root.pid else "pool"
            if "redundancy.events.relay" in " ".join(proc.cmdline()):
                kind = "relay"
            t = proc.cpu_times()
            out[kind] += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def measure(h: Harness, c: Contender, texts: list[str], log: Path) -> dict[str, Any]:
    h.flush()
    warm_keys = h.stage(c, texts[:WARM_UP_TASKS])
    proc = subprocess.Popen(
        [sys.executable, *c.argv],
        env={**h.base_env, **c.env},
        cwd=ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        h.release(c.queue)
        h.wait_results(warm_keys, 120)
        keys = h.stage(c, texts[WARM_UP_TASKS:])
        root = psutil.Process(proc.pid)
        commands_before = command_counts(h.broker)
        cpu_before = cpu_seconds(root)
        began = time.perf_counter()
        h.release(c.queue)
        ended = h.wait_results(keys, 600)
        cpu_after = cpu_seconds(root)
        commands = commands_per_task(commands_before, command_counts(h.broker), len(keys))
        commands["lpush"] = round(commands.get("lpush", 0) - 1 / len(keys), 2)  # the release
    finally:
        stop_process_group(proc)
    n = len(keys)
    cpu = {k: (cpu_after[k] - cpu_before[k]) / n * 1e6 for k in cpu_after}
    return {
        "tasks_per_s": n / (ended - began),
        "worker_cpu_us_per_task": sum(cpu.values()),
        "cpu_us_per_task_by_process": {k: round(v) for k, v in cpu.items()},
        "redis_commands_per_task": commands,
    }


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["tasks_per_s"] for r in rounds]
    cpus = [r["worker_cpu_us_per_task"] for r in rounds]
    return {
        "median_tasks_per_s": statistics.median(rates),
        "min_tasks_per_s": min(rates),
        "max_tasks_per_s": max(rates),
        "median_worker_cpu_us_per_task": statistics.median(cpus),
        "redis_commands_per_task": rounds[-1]["redis_commands_per_task"],
        "rounds": rounds,
    }


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Ratios of medians (tasks/s; and the inverse ratio of CPU per task)."""

    def rate(name: str) -> float:
        return float(results[name]["median_tasks_per_s"])

    def cpu(name: str) -> float:
        return float(results[name]["median_worker_cpu_us_per_task"])

    pairs = {
        "crd_vs_plain_noop_defaults": ("crd_analyze_content", "plain_noop_defaults"),
        "crd_vs_plain_analyze_ours": ("crd_analyze_content", "plain_analyze_ours"),
        "crd_vs_plain_analyze_defaults": ("crd_analyze_content", "plain_analyze_defaults"),
        "plain_analyze_ours_vs_defaults": ("plain_analyze_ours", "plain_analyze_defaults"),
        "plain_analyze_vs_noop_defaults": ("plain_analyze_defaults", "plain_noop_defaults"),
        "crd_vs_crd_before": ("crd_analyze_content", "crd_before"),
        "crd_before_vs_plain_noop_defaults": ("crd_before", "plain_noop_defaults"),
        "crd_before_vs_plain_analyze_ours": ("crd_before", "plain_analyze_ours"),
    }
    out: dict[str, float] = {}
    for label, (a, b) in pairs.items():
        if a in results and b in results:
            out[label] = rate(a) / rate(b)
            out[label + "_by_cpu"] = cpu(b) / cpu(a)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--redis-port", type=int, default=int(os.environ.get("CRD_TEST_REDIS_PORT", "6379"))
    )
    parser.add_argument(
        "--redis-db-base", type=int, default=int(os.environ.get("CRD_TEST_REDIS_DB_BASE", "12"))
    )
    parser.add_argument("--parts", default="three_way", help="three_way,ablation,settings")
    parser.add_argument("--output", default="e2e_tasks", help="results/<name>.json")
    parser.add_argument("--before-src", default=None, help="an older checkout's src/")
    args = parser.parse_args()

    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("CELERY_", "REDIS_", "KAFKA_", "MESSAGE_BROKER", "EVENTS_", "OTEL_", "WORKER_", "LOG_")
        )
    }
    h = Harness(args.redis_port, args.redis_db_base, base_env)
    crd_env = {"REDIS_URL": h.redis_url, "MESSAGE_BROKER_TYPE": "redis_streams"}
    chosen = contenders(args.parts.split(","), crd_env, args.before_src)
    texts = [
        ". ".join(d[i : i + 60] for i in range(0, len(d), 60)) + "."
        for d in synthetic_docs(args.tasks + WARM_UP_TASKS, 300, seed=4)
    ]
    log_dir = Path("/tmp") / f"bench-e2e-{os.getpid()}"
    log_dir.mkdir(exist_ok=True)
    rounds: dict[str, list[dict[str, Any]]] = {c.name: [] for c in chosen}
    try:
        for r in range(args.rounds):
            order = chosen[r % len(chosen) :] + chosen[: r % len(chosen)]
            for c in order:
                got = measure(h, c, texts, log_dir / f"{c.name}.log")
                rounds[c.name].append(got)
                print(f"round {r + 1} {c.name}: {got}", flush=True)
    finally:
        h.flush()
    results = {name: summary(rs) for name, rs in rounds.items()}
    write_result(
        args.output,
        {
            "broker": "redis",
            "pool": "prefork",
            "concurrency": 2,
            "tasks_per_round": args.tasks,
            "text_chars": 300,
            "load_avg_1m": os.getloadavg()[0],
            "contenders": results,
            "ratios_of_medians": ratios(results),
        },
    )


if __name__ == "__main__":
    main()
