"""Validation at the task boundary: pydantic models of what callers send.

A ``ValidationError`` becomes ``InvalidInputError`` with a readable message, so a bad
request fails at once (no retry) and the caller reads why from ``AsyncResult``.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
)

from redundancy.core import MODES
from redundancy.core.scorers import (
    DEFAULT_ALGORITHM,
    DEFAULT_THRESHOLD,
    MIN_THRESHOLD,
    get_scorer,
)
from redundancy.errors import InvalidInputError

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
    expand_identical: StrictBool = False

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
