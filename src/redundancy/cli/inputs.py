"""Reading batch input: files, folders (recursively) and JSONL, into ``(id, text)`` items.

Anything unreadable becomes an item whose text is ``None`` plus a reason, so the batch
report lists it as failed instead of silently skipping it. Memory is bounded by the text
limit, not by the input: a file larger than any text it could hold is refused from its
size, unread, and a JSONL line is read at most ``MAX_LINE_FACTOR`` bytes per allowed
character at a time (the rest of a longer line is skipped in chunks).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redundancy.core.text import CONTROL_CHARACTERS

JSONL_SUFFIXES = (".jsonl", ".ndjson")
MAX_FILE_FACTOR = 4
"""Bytes per character a file may hold (UTF-8 takes at most 4 per character)."""
MAX_LINE_FACTOR = 6
"""Bytes per character a JSONL line may hold (JSON escapes a character in up to 6)."""
LINE_SLACK = 64 * 1024
"""Room on a JSONL line for its id and other fields."""
SKIP_CHUNK = 1 << 20


def max_text_chars() -> int:
    from redundancy.config import get_settings

    return get_settings().max_text_chars


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
    max_chars = max_text_chars()
    for raw in paths:
        if raw == "-":
            yield from _jsonl(sys.stdin.buffer, "stdin", max_chars)
            continue
        path = Path(raw)
        if path.is_dir():
            for entry in sorted(p for p in path.rglob("*") if not _hidden(p, path)):
                doc_id = path_id(entry.relative_to(path) if single else entry)
                if entry.is_dir():
                    if not entry.is_symlink():
                        continue  # walked by rglob
                    problem: str | None = "symbolic link to a folder: not followed (may loop)"
                else:
                    problem = not_regular(entry)
                yield (
                    _file(entry, doc_id, max_chars)
                    if problem is None
                    else InputItem(doc_id, None, problem)
                )
        elif path.suffix.lower() in JSONL_SUFFIXES and not_regular(path) is None:
            with path.open("rb") as fh:
                yield from _jsonl(fh, str(path), max_chars)
        else:
            problem = not_regular(path)
            yield (
                _file(path, path_id(path), max_chars)
                if problem is None
                else InputItem(path_id(path), None, problem)
            )


def path_id(path: Path) -> str:
    """A file's id from its path, always a usable id: bytes of a name that is not UTF-8
    (Python holds them as lone surrogates) and control characters are written as
    ``\\xNN`` escapes, so the file is still read and its id stays readable."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return CONTROL_CHARACTERS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


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


def _file(path: Path, doc_id: str, max_chars: int) -> InputItem:
    try:
        size = path.stat().st_size
        if size > max_chars * MAX_FILE_FACTOR:
            return InputItem(doc_id, None, too_large(f"{size:,} bytes", max_chars))
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
            size, max_chars = path.stat().st_size, max_text_chars()
            if size > max_chars * MAX_FILE_FACTOR:
                raise ValueError(f"{value}: {too_large(f'{size:,} bytes', max_chars)}")
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"{value}: cannot read: {exc.strerror or exc}") from None
    text, problem = decode_text(data)
    if text is None:
        raise ValueError(f"{value}: {problem}")
    return text


def too_large(size: str, max_chars: int) -> str:
    return f"{size}: more than a text of MAX_TEXT_CHARS={max_chars:,} characters can take"


def _lines(stream: Any, limit: int) -> Iterator[bytes | None]:
    """The stream's lines, each read at most ``limit`` bytes at a time; None for a line
    longer than that, whose rest is read and dropped in chunks."""
    while raw := stream.readline(limit + 1):
        if len(raw) <= limit or raw.endswith(b"\n"):
            yield raw
            continue
        while (rest := stream.readline(SKIP_CHUNK)) and not rest.endswith(b"\n"):
            pass
        yield None


def _jsonl(stream: Any, source: str, max_chars: int) -> Iterator[InputItem]:
    """Records of a JSONL byte stream; a line that is not UTF-8, not a record, too long
    or with an unusable id is a failed item."""
    from redundancy.batch.staging import item_id
    from redundancy.errors import InvalidInputError

    limit = max_chars * MAX_LINE_FACTOR + LINE_SLACK
    for lineno, raw in enumerate(_lines(stream, limit), start=1):
        where = f"{source}:{lineno}"
        if raw is None:
            yield InputItem(where, None, too_large(f"line over {limit:,} bytes", max_chars))
            continue
        if not raw.strip():
            continue
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
        given = record.get("id")
        try:
            doc_id = where if given is None else item_id(given, lineno)
        except InvalidInputError as exc:
            yield InputItem(where, None, str(exc).replace(f"item {lineno}: ", "", 1))
            continue
        yield InputItem(doc_id, record["text"])
