"""Reading batch input: files, folders (recursively) and JSONL, into ``(id, text)`` items.

Anything unreadable becomes an item whose text is ``None`` plus a reason, so the batch
report lists it as failed instead of silently skipping it.
"""

from __future__ import annotations

import errno
import json
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class InputItem:
    id: str
    text: Any
    error: str | None = None
    """Why the input could not be read; such items are reported, never submitted."""


def read_inputs(paths: list[str]) -> Iterator[InputItem]:
    """Items from every path: ``-`` is JSONL on stdin, folders are walked in sorted order.

    A file's id is its path relative to the folder when a single folder is given, and the
    path as found (folder/relative) when several paths are given, so ids stay unique.
    What a folder holds besides regular files and folders -- a symlink loop, a broken
    link, a FIFO, a socket -- is reported as a failed item, never read or skipped.
    """
    single = len(paths) == 1
    for raw in paths:
        if raw == "-":
            yield from _jsonl(sys.stdin.buffer, "stdin")
            continue
        path = Path(raw)
        if path.is_dir():
            for entry in sorted(p for p in path.rglob("*") if not _hidden(p, path)):
                doc_id = str(entry.relative_to(path) if single else entry)
                if entry.is_dir():
                    if not entry.is_symlink():
                        continue  # walked by rglob
                    problem: str | None = "symbolic link to a folder: not followed (may loop)"
                else:
                    problem = not_regular(entry)
                yield _file(entry, doc_id) if problem is None else InputItem(doc_id, None, problem)
        elif path.suffix.lower() in JSONL_SUFFIXES and not_regular(path) is None:
            with path.open("rb") as fh:
                yield from _jsonl(fh, str(path))
        else:
            problem = not_regular(path)
            yield _file(path, str(path)) if problem is None else InputItem(str(path), None, problem)


def not_regular(path: Path) -> str | None:
    """Why ``path`` is not a regular file one can read without blocking, or None."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "broken symbolic link" if path.is_symlink() else "no such file or directory"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        return f"cannot read: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"not a regular file ({kind})"


def _hidden(file: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def decode_text(data: bytes) -> tuple[str | None, str | None]:
    """``(text, None)`` for UTF-8 text, else ``(None, why not)``."""
    if b"\x00" in data:
        return None, "not text (binary file)"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start})"


def _file(path: Path, doc_id: str) -> InputItem:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return InputItem(doc_id, None, f"cannot read: {exc.strerror or exc}")
    text, problem = decode_text(data)
    return InputItem(doc_id, text, problem)


def read_text_argument(value: str) -> str:
    """The text of a command's FILE argument (``-`` is stdin), or ValueError saying why it
    cannot be read as text -- never a block on a FIFO, never a traceback."""
    if value == "-":
        data = sys.stdin.buffer.read()
    else:
        path = Path(value)
        problem = not_regular(path)
        if problem is not None:
            raise ValueError(f"{value}: {problem}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"{value}: cannot read: {exc.strerror or exc}") from None
    text, problem = decode_text(data)
    if text is None:
        raise ValueError(f"{value}: {problem}")
    return text


def _jsonl(lines: Any, source: str) -> Iterator[InputItem]:
    """Records of a JSONL byte stream; a line that is not UTF-8 is a failed item."""
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{source}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield InputItem(where, None, f"not UTF-8 text (byte {exc.start} of the line)")
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield InputItem(where, None, f"invalid JSON: {exc.msg}")
            continue
        except (ValueError, RecursionError) as exc:  # a huge integer, nesting too deep
            yield InputItem(where, None, f"invalid JSON: {type(exc).__name__}: {exc}")
            continue
        if not isinstance(record, dict) or "text" not in record:
            yield InputItem(where, None, 'each line must be an object with "text" (and "id")')
            continue
        yield InputItem(str(record.get("id", where)), record["text"])
