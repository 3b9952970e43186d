"""A batch's staged documents: written once to the job store, read a chunk at a time.

A batch never travels as one giant message: ``stage_documents`` writes its items to the
job store as they come (only their ids stay in memory), and every sub-task carries only
``(batch_id, chunk numbers)`` and loads what it needs. Staged documents expire after
``BATCH_TTL`` seconds; a sub-task that finds them gone fails loudly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from redundancy.batch.store import get_job_store
from redundancy.config import get_settings
from redundancy.core.neardup import Document, valid_documents
from redundancy.core.text import validate_identifier
from redundancy.errors import InvalidInputError, NotTextError, RedundancyError

log = logging.getLogger(__name__)

NOT_TEXT = "not_text"
"""Staged in place of an item's text when it is not a string: the type's name, so the
item fails alone with a clear error and the rest of the batch stays JSON."""

_MISSING = object()

StagedDocument = tuple[int, str, Any]
"""``(position, id, text)``; the text is what ``iter_items`` staged (see ``staged_text``)."""


class StagedDocumentsMissingError(RedundancyError):
    """A batch's staged documents are gone (expired after BATCH_TTL, or deleted)."""


def iter_items(items: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """Batch items (texts or ``{"id", "text"}``) as ``(id, text)``, one at a time.

    Bad *items* are kept and fail individually later (the batch reports them); only a
    duplicate or unusable id (``item_id``) fails the whole batch, because results could
    not be told apart. Only the
    ids are remembered, so the items may be a stream of any length.
    """
    if isinstance(items, str | bytes | bytearray | Mapping) or not isinstance(items, Iterable):
        raise InvalidInputError(
            f"items must be a list of texts or {{id, text}} objects, got {type(items).__name__}"
        )
    seen: dict[str, int] = {}
    for position, item in enumerate(items):
        if isinstance(item, dict):
            doc_id = item_id(item.get("id"), position)
            text = item.get("text", _MISSING)
        else:
            doc_id, text = str(position), item
        if doc_id in seen:
            raise InvalidInputError(
                f"duplicate item id {doc_id!r} at positions {seen[doc_id]} and {position}"
            )
        seen[doc_id] = position
        if isinstance(text, str):
            yield doc_id, text
        else:
            yield doc_id, {NOT_TEXT: "no text" if text is _MISSING else type(text).__name__}


MAX_ITEM_ID_CHARS = 1024
"""Longest id a batch item may carry (ids travel in every result, pair and cluster)."""


def item_id(given: Any, position: int) -> str:
    """A batch item's id: the one given (a number is taken as its decimal string), or its
    position when none is; an id that is no usable string fails the batch at once."""
    if given is None:
        return str(position)
    if isinstance(given, int) and not isinstance(given, bool):
        given = str(given)
    return validate_identifier(given, name=f"item {position}: id", max_chars=MAX_ITEM_ID_CHARS)


def staged_text(text: Any) -> str:
    """The text of a staged item, or NotTextError for what ``iter_items`` marked."""
    if isinstance(text, dict) and NOT_TEXT in text:
        got = text[NOT_TEXT]
        raise NotTextError("item has no text" if got == "no text" else
                           f"text must be a string, got {got}")  # fmt: skip
    return text  # type: ignore[no-any-return]


def stage_documents(batch_id: str, items: Iterable[Any]) -> int:
    """Write ``items`` to the job store under ``batch_id``; how many were staged.

    A duplicate id (or an outage) half-way drops what was already staged; an empty batch
    is invalid input.
    """
    store = get_job_store()
    try:
        count = store.stage(batch_id, iter_items(items), get_settings().batch_ttl)
    except Exception:
        store.delete(batch_id)
        raise
    if count == 0:
        raise InvalidInputError("invalid batch: it has no items")
    return count


def chunk_count(count: int, chunk_size: int) -> int:
    return max(1, math.ceil(count / chunk_size))


def load_chunk(batch_id: str, chunk: int, chunk_size: int, count: int) -> list[StagedDocument]:
    """The staged documents of one chunk; missing ones fail loudly."""
    return load_positions(batch_id, range(chunk * chunk_size, min((chunk + 1) * chunk_size, count)))


def load_positions(batch_id: str, positions: Sequence[int]) -> list[StagedDocument]:
    """Staged documents by position; missing ones fail loudly."""
    loaded = get_job_store().load(batch_id, positions)
    missing = [p for p, doc in zip(positions, loaded, strict=True) if doc is None]
    if missing:
        raise StagedDocumentsMissingError(
            f"batch {batch_id}: {len(missing)} staged documents are missing (first at "
            f"position {missing[0]}); they expire after BATCH_TTL seconds"
        )
    return [(p, doc[0], doc[1]) for p, doc in zip(positions, loaded, strict=True) if doc]


def comparable_documents(loaded: Iterable[StagedDocument], algorithm: str) -> list[Document]:
    """The loaded documents that are valid text ``algorithm`` can compare, ready to
    compare (the others are reported by ``analyze_chunk`` and never paired)."""
    max_chars = get_settings().max_text_chars
    items = ((p, text) for p, _id, text in loaded)
    return valid_documents(items, max_chars=max_chars, algorithm=algorithm)


def advance_progress(batch_id: str, documents: int | None = None) -> None:
    """Count the documents an analysis sub-task analysed, or one finished search
    sub-task (the CLI's progress on a cluster); never fails a job."""
    try:
        get_job_store().advance(batch_id, get_settings().batch_ttl, documents)
    except Exception:
        log.warning("could not count progress of batch %s", batch_id, exc_info=True)
