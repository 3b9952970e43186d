"""What summarizing a task's arguments at send time costs, per message.

``python -m benchmarks.send_repr`` builds the message of ``redundancy.analyze_content``
(``app.amqp.as_task_v2``: headers, body and the task-sent event, no broker) for texts of
several sizes, with our message factory (``SummarizingAMQP``: length and sha256 of each
text) and with plain Celery's (``saferepr`` of the first ~1 KB: what Celery does
otherwise), interleaved in the same run, and reports the median microseconds per message
and their difference. Writes ``benchmarks/results/send_repr.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.common import synthetic_docs, write_result

SIZES = (300, 2_500, 80_000, 1_000_000)


def _per_call_us(fn: Callable[[], Any], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    from celery import Celery

    from redundancy.workers import create_app

    ours = create_app()
    plain = Celery("plain", broker="memory://localhost/", backend="cache+memory://")
    plain.conf.task_send_sent_event = True
    rows = []
    for size in SIZES:
        text = (synthetic_docs(1, size, seed=size)[0] * (size // 1000 + 2))[:size]
        calls = max(20, 200_000 // size)
        samples: dict[str, list[float]] = {"ours": [], "celery": []}

        def message(app: Any, text: str = text) -> Any:
            return app.amqp.as_task_v2(
                "0" * 32, "redundancy.analyze_content", (text,),
                {"threshold": 0.8, "algorithm": "ratio"}, create_sent_event=True,
            )  # fmt: skip

        for _ in range(args.rounds):  # interleaved: the machine's load hits both alike
            samples["ours"].append(_per_call_us(lambda: message(ours), calls))
            samples["celery"].append(_per_call_us(lambda: message(plain), calls))
        ours_us = statistics.median(samples["ours"])
        celery_us = statistics.median(samples["celery"])
        rows.append(
            {
                "text_chars": size,
                "ours_us_per_message": round(ours_us, 2),
                "celery_us_per_message": round(celery_us, 2),
                "added_us": round(ours_us - celery_us, 2),
                "ratio": round(ours_us / celery_us, 3),
                "argsrepr_ours": message(ours).headers["argsrepr"],
                "argsrepr_celery_chars": len(message(plain).headers["argsrepr"]),
            }
        )
        print(rows[-1], flush=True)
    write_result(
        "send_repr",
        {
            "what": "building one analyze_content message (headers, body, task-sent event)",
            "baseline": "plain Celery's message factory (saferepr of the arguments)",
            "rounds": args.rounds,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
