"""What the message guard adds per task message, next to what Celery's worker main process
spends on the same message anyway.

    python -m benchmarks.message_guard [--ops 20000] [--rounds 7]

Messages are built by Celery's own producer code (protocol 2, JSON): an
``analyze_content`` of a 1,000-character text and a ``process_batch`` of 500 such texts.
Per message, in one run and interleaved:

* ``celery_request``: what plain Celery does in the main process before handing a
  message to the pool -- decode the body (kombu) and build the ``Request``;
* ``guard_check``: the guard's check of a message whose body is already decoded (the
  guard decodes it first, and kombu hands that same decoded body to Celery's request,
  so the check is all the guard adds).

Ratio = guard_check / celery_request. Results: ``benchmarks/results/message_guard.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.worker.request import Request
from kombu.message import Message
from kombu.serialization import dumps

from benchmarks.common import synthetic_docs, write_result
from redundancy import names
from redundancy.workers.guard import inspect_message


def messages(app: Celery, args: tuple[Any, ...], name: str, count: int) -> list[Message]:
    task = app.amqp.as_task_v2(str(uuid.uuid4()), name, args, {})
    content_type, encoding, raw = dumps(task.body, serializer="json")
    return [
        Message(
            body=raw,
            content_type=content_type,
            content_encoding=encoding,
            headers=dict(task.headers),
            delivery_info={"routing_key": "analysis"},
            accept=["application/json"],
        )
        for _ in range(count)
    ]


def per_message_us(run: Callable[[list[Message]], None], make: Callable[[], list[Message]],
                   rounds: int) -> float:  # fmt: skip
    """Median over rounds of the mean time per message (fresh messages each round)."""
    times = []
    for _ in range(rounds):
        batch = make()
        started = time.perf_counter()
        run(batch)
        times.append((time.perf_counter() - started) / len(batch) * 1e6)
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    opts = parser.parse_args()

    app = Celery("bench", set_as_current=False)

    @app.task(name=names.ANALYZE_CONTENT)
    def analyze(text: str) -> None: ...

    @app.task(name=names.PROCESS_BATCH)
    def batch(items: list[str]) -> None: ...

    text = synthetic_docs(1, 1000)[0]
    cases = {
        "analyze_content_1k": (analyze, (text,), opts.ops),
        "process_batch_500x1k": (batch, (synthetic_docs(500, 1000),), max(opts.ops // 100, 50)),
    }
    results: dict[str, Any] = {}
    for case, (task, args, count) in cases.items():

        def make(
            task: Any = task, args: tuple[Any, ...] = args, count: int = count
        ) -> list[Message]:
            return messages(app, args, task.name, count)

        def decoded(
            task: Any = task, args: tuple[Any, ...] = args, count: int = count
        ) -> list[Message]:
            batch = make(task, args, count)
            for message in batch:
                message.decode()
            return batch

        def celery_request(batch: list[Message], task: Any = task) -> None:
            for message in batch:
                Request(message, app=app, task=task, hostname="bench")

        def guard_check(batch: list[Message]) -> None:
            for message in batch:
                if inspect_message(message, None) is not None:
                    raise AssertionError("a well-formed message was refused")

        celery_us = per_message_us(celery_request, make, opts.rounds)
        guard_us = per_message_us(guard_check, decoded, opts.rounds)
        results[case] = {
            "messages_per_round": count,
            "body_bytes": len(make(count=1)[0].body),
            "celery_request_us": celery_us,
            "guard_check_us": guard_us,
            "ratio_guard_to_celery": round(guard_us / celery_us, 3),
        }
    write_result(
        "message_guard",
        {
            "what": "per task message: the guard's check vs plain Celery's decode + Request",
            "rounds": opts.rounds,
            "cases": results,
        },
    )


if __name__ == "__main__":
    main()
