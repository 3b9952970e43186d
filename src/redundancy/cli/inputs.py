"""Reading batch input: files, folders (recursively) and JSONL, into ``(id, text)`` items.

Anything unreadable becomes an item whose text is ``None`` plus a reason, so the batch
report lists it as failed instead of silently skipping it.
"""

from __future__ import annotations

import json
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
    """
    single = len(paths) == 1
    for raw in paths:
        if raw == "-":
            yield from _jsonl(sys.stdin.buffer, "stdin")
            continue
        path = Path(raw)
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path)):
                yield _file(file, str(file.relative_to(path) if single else file))
        elif path.is_file():
            if path.suffix.lower() in JSONL_SUFFIXES:
                with path.open("rb") as fh:
                    yield from _jsonl(fh, str(path))
            else:
                yield _file(path, str(path))
        else:
            yield InputItem(str(path), None, "no such file or directory")


def _hidden(file: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def _file(path: Path, doc_id: str) -> InputItem:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return InputItem(doc_id, None, f"cannot read: {exc.strerror or exc}")
    if b"\x00" in data:
        return InputItem(doc_id, None, "not text (binary file)")
    try:
        return InputItem(doc_id, data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return InputItem(doc_id, None, f"not UTF-8 text (byte {exc.start})")


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
