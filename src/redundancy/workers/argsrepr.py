"""What Flower and task events show of a task's arguments: a short, safe summary.

Celery puts ``argsrepr`` / ``kwargsrepr`` in every message (and its task-sent and
task-received events), by default the first ~1 KB of ``repr(args)`` -- for us the
documents' text, readable by anyone with a Flower login. The app's message factory
(``SummarizingAMQP``, Celery's ``amqp`` extension point) sets them at send time instead:
a text becomes ``<text: 1,234 chars, sha256:0123456789ab>`` (of its first 64 K
characters when longer; plus its first ``TASK_ARGS_PREVIEW_WORDS`` words when set), a
list or dict its size; numbers, flags and
short names stay as they are. The task itself receives its arguments unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from celery.app.amqp import AMQP

from redundancy.config import get_settings

SHORT_TEXT = 32
"""A string up to this many characters (a name, an id, a mode) is shown as it is."""
HASH_CHARS = 12
HASHED_CHARS = 65_536
"""Characters of a text its summary hashes at most: hashing costs ~1.4 µs per KB on the
producer, so a 1 MB text would add ~1.4 ms to its send (benchmarks/send_repr.py)."""


def summarize(value: Any, words: int = 0) -> str:
    """A short ``repr``-like text for one argument, never its content beyond ``words``."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        if len(value) <= SHORT_TEXT:
            return repr(value)
        hashed = value[:HASHED_CHARS]
        digest = hashlib.sha256(hashed.encode("utf-8", "surrogatepass")).hexdigest()
        of = "" if len(hashed) == len(value) else f" of the first {HASHED_CHARS:,}"
        preview = ""
        if words:
            first = " ".join(value[:HASHED_CHARS].split(maxsplit=words)[:words])
            preview = f", {first[:200]!r}..."
        return f"<text: {len(value):,} chars, sha256{of}:{digest[:HASH_CHARS]}{preview}>"
    if isinstance(value, Mapping):
        return f"<{type(value).__name__}: {len(value):,} keys>"
    if isinstance(value, Sequence | set | frozenset):
        return f"<{type(value).__name__}: {len(value):,} items>"
    return f"<{type(value).__name__}>"


def args_repr(args: Sequence[Any], words: int = 0) -> str:
    parts = [summarize(a, words) for a in args]
    return f"({', '.join(parts)}{',' if len(parts) == 1 else ''})"


def kwargs_repr(kwargs: Mapping[str, Any], words: int = 0) -> str:
    return "{" + ", ".join(f"{k!r}: {summarize(v, words)}" for k, v in kwargs.items()) + "}"


class SummarizingAMQP(AMQP):  # type: ignore[misc]  # Celery is untyped
    """Celery's message factory, with ``argsrepr`` / ``kwargsrepr`` summarized (unless a
    caller set them explicitly)."""

    def as_task_v2(
        self,
        task_id: str,
        name: str,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        *positional: Any,  # Celery passes countdown, eta ... by position
        **options: Any,
    ) -> Any:
        words = get_settings().task_args_preview_words
        if options.get("argsrepr") is None and isinstance(args, list | tuple):
            options["argsrepr"] = args_repr(args, words)
        if options.get("kwargsrepr") is None and isinstance(kwargs, Mapping):
            options["kwargsrepr"] = kwargs_repr(kwargs, words)
        return super().as_task_v2(task_id, name, args, kwargs, *positional, **options)


__all__ = ["SummarizingAMQP", "args_repr", "kwargs_repr", "summarize"]
