"""``POST /v1/batches`` bodies into staged documents: JSON items, a JSONL stream, or a
multipart upload of text files.

JSONL is never held in memory: a worker thread runs ``stage_batch`` over a generator that
pulls the body chunk by chunk from the event loop (``anyio.from_thread``), so documents
reach the job store as they arrive and only the current line and the ids seen stay in
memory. Every form counts documents and bytes on the way, stops past
``API_MAX_BATCH_DOCUMENTS`` (413) and charges the key's daily quota before staging (JSONL:
every ``QUOTA_STEP`` documents; an aborted request gets its charge back).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from redundancy.api.apikeys import Principal
from redundancy.api.auth import charge_quota, refund_quota
from redundancy.api.errors import PayloadTooLargeError, UnsupportedMediaTypeError, readable
from redundancy.api.models import BatchItem, BatchRequest
from redundancy.config import get_settings
from redundancy.errors import InvalidInputError

JSONL_TYPES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")
QUOTA_STEP = 1000
"""A JSONL stream charges the daily quota this many documents at a time."""
OPTION_FIELDS = ("threshold", "algorithm", "mode", "webhook_url")


def too_many(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"a batch may hold at most {limit:,} documents (API_MAX_BATCH_DOCUMENTS)"
    )


@dataclass
class Tally:
    """Documents and bytes seen so far, and what was charged to the quota for them."""

    limit: int
    documents: int = 0
    bytes: int = 0
    charged_documents: int = 0
    charged_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def count(self, items: Iterable[tuple[str, Any]]) -> Iterator[dict[str, Any]]:
        for doc_id, text in items:
            self.documents += 1
            if self.documents > self.limit:
                raise too_many(self.limit)
            if isinstance(text, str):
                self.bytes += len(text.encode("utf-8", "surrogatepass"))
            yield {"id": doc_id, "text": text}


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def json_batch(request: Request) -> tuple[BatchRequest, list[tuple[str, Any]]]:
    """The whole JSON body (bounded by API_MAX_JSON_BYTES), validated."""
    raw = await request.body()
    try:
        req = BatchRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidInputError(f"invalid BatchRequest: {readable(exc.errors())}") from None
    limit = get_settings().api_max_batch_documents
    if len(req.items) > limit:
        raise too_many(limit)
    items = [
        (str(item.id), item.text) if isinstance(item, BatchItem) else (str(pos), item)
        for pos, item in enumerate(req.items)
    ]
    return req, items


async def multipart_batch(request: Request) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """Options from form fields, one document per uploaded file (its name is its id).

    A file that is not UTF-8 text becomes an item that fails alone, as with ``crd batch``.
    """
    limit = get_settings().api_max_batch_documents
    try:
        form = await request.form(max_files=limit + 1, max_fields=len(OPTION_FIELDS) + 1)
    except HTTPException as exc:
        if "files" in str(exc.detail).lower():
            raise too_many(limit) from None
        raise InvalidInputError(f"invalid multipart body: {exc.detail}") from None
    options: dict[str, Any] = {}
    items: list[tuple[str, Any]] = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            if len(items) >= limit:
                raise too_many(limit)
            data = await value.read()
            try:
                text: Any = data.decode("utf-8")
            except UnicodeDecodeError:
                text = data  # not text: the item fails alone with NotTextError
            items.append((value.filename or name, text))
        elif name in OPTION_FIELDS:
            options[name] = value
        else:
            raise InvalidInputError(
                f"unknown form field {name!r}: send files, and options {', '.join(OPTION_FIELDS)}"
            )
    await form.close()
    if not items:
        raise InvalidInputError("invalid batch: the form has no files")
    return options, items


def jsonl_items(next_chunk: Callable[[], bytes | None], max_line: int) -> Iterator[tuple[str, Any]]:
    """``(id, text)`` per JSONL line of a byte stream: an object with ``text`` (and
    ``id``, default: the line number) or a JSON string. Bad lines fail the request (422)."""
    buffer = b""
    lineno = 0

    def parse(raw: bytes) -> tuple[str, Any] | None:
        if not raw.strip():
            return None
        try:
            record = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"JSONL line {lineno}: not a JSON value ({exc})") from None
        if isinstance(record, str):
            return str(lineno), record
        if isinstance(record, dict) and isinstance(record.get("text"), str):
            doc_id = record.get("id", lineno)
            if isinstance(doc_id, str | int) and not isinstance(doc_id, bool):
                return str(doc_id), record["text"]
        raise InvalidInputError(
            f'JSONL line {lineno}: expected {{"id": ..., "text": "..."}} or a JSON string'
        )

    while (chunk := next_chunk()) is not None:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        if len(buffer) > max_line:
            raise PayloadTooLargeError(f"JSONL line {lineno + 1} is longer than {max_line:,} bytes")
        for raw in lines:
            lineno += 1
            if (parsed := parse(raw)) is not None:
                yield parsed
    lineno += 1
    if (parsed := parse(buffer)) is not None:
        yield parsed


def stream_reader(request: Request) -> Callable[[], bytes | None]:
    """A blocking ``next chunk`` for a worker thread, reading the body on the loop."""
    chunks: AsyncIterator[bytes] = request.stream().__aiter__()

    async def next_or_none() -> bytes | None:
        try:
            return await chunks.__anext__()
        except StopAsyncIteration:
            return None

    return lambda: anyio.from_thread.run(next_or_none)


def charged_stream(
    items: Iterator[dict[str, Any]], tally: Tally, principal: Principal
) -> Iterator[dict[str, Any]]:
    """Pass ``items`` on, charging the quota every QUOTA_STEP documents (thread side)."""
    for item in items:
        if tally.documents - tally.charged_documents >= QUOTA_STEP:
            _charge_rest(tally, principal)
        yield item
    _charge_rest(tally, principal)


def _charge_rest(tally: Tally, principal: Principal) -> None:
    docs = tally.documents - tally.charged_documents
    size = tally.bytes - tally.charged_bytes
    if docs or size:
        anyio.from_thread.run(charge_quota, principal, docs, size)
        tally.charged_documents += docs
        tally.charged_bytes += size


async def refund(tally: Tally, principal: Principal) -> None:
    if tally.charged_documents or tally.charged_bytes:
        await refund_quota(principal, tally.charged_documents, tally.charged_bytes)


def unsupported(kind: str) -> UnsupportedMediaTypeError:
    return UnsupportedMediaTypeError(
        f"unsupported Content-Type {kind or '(none)'!r}: send application/json, "
        f"application/x-ndjson (JSONL, streamed) or multipart/form-data (text files)"
    )


__all__ = [
    "JSONL_TYPES",
    "Tally",
    "charged_stream",
    "json_batch",
    "jsonl_items",
    "media_type",
    "multipart_batch",
    "refund",
    "stream_reader",
    "unsupported",
]
