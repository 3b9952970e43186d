"""The results cache of the tasks: a second submission of the same text is not recomputed.

Keys (in the cache's "cache" namespace, see ``redundancy.keys``) carry the algorithm
version, the scorer and the threshold, so a new core version or other parameters never
reuse an old result:

* analysis: sha256 of the *exact* text (results quote it and count its characters);
* similarity: the two content hashes (sha256 of the normalised texts), in order -- every
  field of a SimilarityResult depends only on the normalised texts.

So a cached result is always what recomputing would return -- and a stored value is
believed only if it has the result model's shape (``conforms``: strict pydantic
validation, on every hit); anything else is a miss, counted in
``redundancy_cache_rejected_values_total``, recomputed and overwritten. Every write
has the cache's TTL (``CACHE_DEFAULT_TTL``). The cache is a hook: when
it fails, the task computes anyway and the failure is counted in ``errors`` and
``redundancy_cache_errors_total``; only the computation's own errors reach the caller.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from redundancy import keys
from redundancy.cache import overlap
from redundancy.cache.client import get_cache
from redundancy.cache.core import cache_type
from redundancy.cache.metrics import CACHE_ERRORS
from redundancy.config import get_settings
from redundancy.core import ANALYSIS_VERSION, SIMILARITY_VERSION, content_hash

log = logging.getLogger("redundancy.cache")
T = TypeVar("T")


def analysis_key(text: str, threshold: float, algorithm: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return keys.analysis_result(digest, float(threshold), algorithm, ANALYSIS_VERSION)


def similarity_key(text_a: str, text_b: str, threshold: float, algorithm: str) -> str:
    return keys.similarity_result(
        content_hash(text_a), content_hash(text_b), float(threshold), algorithm, SIMILARITY_VERSION
    )


def conforms(model: type[BaseModel]) -> Callable[[Any], bool]:
    """A check that a stored value is a ``model`` as JSON (strict: no coercion, so what
    is returned is exactly what was validated; the models forbid extra fields)."""

    def check(value: Any) -> bool:
        try:
            model.model_validate(value, strict=True)
        except ValidationError:
            return False
        return True

    return check


def cached(key: str, compute: Callable[[], T], model: type[BaseModel], request: Any = None) -> T:
    """``compute()`` through the process's cache (computed once for concurrent misses);
    a stored value that is not a ``model`` is not believed. With the task's ``request``
    the lookup may already have been sent with the STARTED state, and the store goes with
    the SUCCESS state (``redundancy.cache.overlap``).

    Never lets the cache fail the caller: an error inside the cache layer itself is
    logged and counted, and the value is computed (or the one computed is returned).
    """
    if not get_settings().cache_results:
        return compute()
    outcome: dict[str, Any] = {}

    def factory() -> T:
        try:
            outcome["value"] = compute()
        except BaseException:
            outcome["failed"] = True
            raise
        return outcome["value"]  # type: ignore[no-any-return]

    try:
        cache = get_cache()
        if not overlap.usable(request):
            return cache.get_or_set(key, factory, validate=conforms(model))  # type: ignore[no-any-return]
        early = getattr(request, overlap.LOOKUP_ATTR, None)
        defer = overlap.hand_over(request)
        return cache.get_or_set(  # type: ignore[no-any-return]
            key, factory, validate=conforms(model), early=early, defer=defer
        )
    except Exception:
        if outcome.get("failed"):
            raise  # the computation's own error (invalid input ...): the task's result
        log.exception("results cache failed for %s; computing without it", key)
        CACHE_ERRORS.labels(cache_type(key, keys.CACHE_PREFIX), "internal").inc()
        return outcome["value"] if "value" in outcome else compute()
