"""The time budget of a task from the size of its input: a hard limit that stops native work.

A soft time limit raises in Python code only, so it cannot interrupt rapidfuzz while it
runs native code: a pathological text held a pool process for the whole ``TASK_TIME_LIMIT``
(600 s). The hard limit is enforced from outside (the pool kills the process), so it
is the one that really stops work. The message guard sets it per message, for the tasks
whose input travels in the message, to

    hard = min(TASK_TIME_LIMIT, TASK_TIME_BASE + TASK_TIME_PER_MCHAR * input_chars / 10**6)

and the soft limit to ``SOFT_SHARE`` of it (capped by TASK_SOFT_TIME_LIMIT); a producer's
own ``time_limit`` is kept when it is smaller. ``input_chars`` is the text of
``analyze_content``, both texts of ``compare_texts``. Other tasks get the global limits
(batch sub-tasks read their bounded chunks from Redis): a producer cannot ask for more.
The README's Security section lists the measured cost per input size these defaults
cover.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from redundancy import names
from redundancy.config import Settings

SIZED_TASKS: Final[Mapping[str, tuple[str, ...]]] = {
    names.ANALYZE_CONTENT: ("text",),
    names.COMPARE_TEXTS: ("text_a", "text_b"),
}
"""Task -> its parameters that carry input text, in positional order."""
SOFT_SHARE: Final = 0.9
"""The soft limit's share of the hard one: the task may still clean up in Python."""


def input_chars(task: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> int | None:
    """Characters of input text a message carries; None for tasks without a budget."""
    params = SIZED_TASKS.get(task)
    if params is None:
        return None
    total = 0
    for position, name in enumerate(params):
        value = args[position] if position < len(args) else kwargs.get(name)
        if isinstance(value, str):
            total += len(value)
    return total


def time_limits(chars: int, settings: Settings) -> tuple[float, float]:
    """(hard, soft) seconds for ``chars`` characters of input."""
    hard = min(
        float(settings.task_time_limit),
        settings.task_time_base + settings.task_time_per_mchar * chars / 1_000_000,
    )
    soft = min(float(settings.task_soft_time_limit), hard * SOFT_SHARE)
    return round(hard, 3), round(soft, 3)


def _smaller(given: Any, ours: float) -> float:
    return min(float(given), ours) if isinstance(given, int | float) and given > 0 else ours


def budget_headers(
    headers: dict[str, Any],
    task: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    settings: Settings,
) -> None:
    """Set ``headers["timelimit"]`` to the budget of this message (a well-formed one):
    by its size for ``SIZED_TASKS``, else the global limits -- never more than a
    producer's own smaller limits, never more than TASK_TIME_LIMIT."""
    chars = input_chars(task, args, kwargs)
    if chars is None:
        hard, soft = float(settings.task_time_limit), float(settings.task_soft_time_limit)
    else:
        hard, soft = time_limits(chars, settings)
    given = headers.get("timelimit") or (None, None)
    headers["timelimit"] = [_smaller(given[0], hard), _smaller(given[1], soft)]


__all__ = ["SIZED_TASKS", "budget_headers", "input_chars", "time_limits"]
