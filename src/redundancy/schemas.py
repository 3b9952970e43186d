"""Validation at the task boundary: pydantic models of what callers send.

A ``ValidationError`` becomes ``InvalidInputError`` with a readable message, so a bad
request fails at once (no retry) and the caller reads why from ``AsyncResult``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from redundancy.core import MODES
from redundancy.core.scorers import (
    DEFAULT_ALGORITHM,
    DEFAULT_THRESHOLD,
    MIN_THRESHOLD,
    get_scorer,
)
from redundancy.errors import InvalidInputError, NotTextError

M = TypeVar("M", bound=BaseModel)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(default=DEFAULT_THRESHOLD, ge=MIN_THRESHOLD, le=1.0)
    algorithm: str = DEFAULT_ALGORITHM

    @field_validator("algorithm")
    @classmethod
    def _known_scorer(cls, v: str) -> str:
        get_scorer(v)  # the scorer table is the one list (did-you-mean on a typo)
        return v


class AnalyzeRequest(_Request):
    text: StrictStr


class CompareRequest(_Request):
    text_a: StrictStr
    text_b: StrictStr


class BatchOptions(_Request):
    """Everything about a batch except its items (which may be a stream)."""

    webhook_url: str | None = None
    mode: str = "auto"

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, v: str) -> str:
        if v not in MODES:
            raise ValueError(f"unknown mode {v!r}; choose one of {', '.join(MODES)}")
        return v

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http:// or https:// URL")
        return v


def validate(model: type[M], **fields: Any) -> M:
    """Build ``model`` or raise InvalidInputError listing every problem."""
    try:
        return model(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInputError(f"invalid {model.__name__}: {problems}") from None


NOT_TEXT = "not_text"
"""Staged in place of an item's text when it is not a string: the type's name, so the
item fails alone with a clear error and the rest of the batch stays JSON."""


_MISSING = object()


def iter_items(items: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """Batch items (texts or ``{"id", "text"}``) as ``(id, text)``, one at a time.

    Bad *items* are kept and fail individually later (the batch reports them); only a
    duplicate id fails the whole batch, because results could not be told apart. Only the
    ids are remembered, so the items may be a stream of any length.
    """
    if isinstance(items, str | bytes | bytearray | dict):
        raise InvalidInputError(
            f"items must be a list of texts or {{id, text}} objects, got {type(items).__name__}"
        )
    seen: dict[str, int] = {}
    for position, item in enumerate(items):
        if isinstance(item, dict):
            doc_id = str(item.get("id", position))
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


def staged_text(text: Any) -> str:
    """The text of a staged item, or NotTextError for what ``iter_items`` marked."""
    if isinstance(text, dict) and NOT_TEXT in text:
        got = text[NOT_TEXT]
        raise NotTextError("item has no text" if got == "no text" else
                           f"text must be a string, got {got}")  # fmt: skip
    return text  # type: ignore[no-any-return]
