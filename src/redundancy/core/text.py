"""Text normalisation, hashing, tokenising and input limits.

Normalisation (used for hashing and for every comparison) is, in this order:
1. Unicode NFKC, so compatibility forms compare equal (``ﬁ`` -> ``fi``, full-width digits);
2. ``str.casefold()``, so case never matters (``Straße`` == ``STRASSE``);
3. every run of whitespace becomes one space, and the ends are stripped.
Punctuation is kept: it carries meaning for sentence similarity.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from redundancy.errors import EmptyTextError, NotTextError, TextTooLargeError

DEFAULT_MAX_CHARS = 1_000_000
"""Longest text accepted, in characters, before and after normalisation (configurable
with ``MAX_TEXT_CHARS``)."""

MAX_EXPANSION = 18
"""Most characters one code point becomes under ``normalise`` (U+FDFA under NFKC; a unit
test checks every code point). Shorter texts cannot outgrow the limit."""

CUT_SLACK = 4
"""Characters a composition across a cut between two slices can save at most (a
character with three combining marks, or a Hangul syllable from its jamo)."""

NORMALISE_SLICE = 1 << 14
"""Characters normalised at a time when checking how far a text grows (at most 295K
characters of output each)."""

_WHITESPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+(?:['\u2019]\w+)*")
# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) and whitespace,
# or at a blank line; single newlines are soft wraps inside a paragraph.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]\u201d\u2019])\s+|\n\s*\n")


def normalise(text: str) -> str:
    """The canonical form used for hashes and comparisons (see the module docstring)."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def content_hash(text: str) -> str:
    """sha256 hex digest of the normalised text: equal for texts that differ only in
    case, whitespace or Unicode compatibility forms."""
    return hash_normalised(normalise(text))


def hash_normalised(normalised: str) -> str:
    """sha256 of text that is already normalised (skips normalising twice)."""
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def words(normalised: str) -> list[str]:
    """Unicode words (letters, digits, underscores; inner apostrophes kept)."""
    return _WORD.findall(normalised)


def split_sentences(text: str) -> list[str]:
    """Sentences of the *original* text, stripped, empty pieces dropped."""
    return [s for s in (p.strip() for p in _SENTENCE_END.split(text)) if s]


def validate_text(text: object, *, max_chars: int = DEFAULT_MAX_CHARS, name: str = "text") -> str:
    """Return ``text`` if it is usable, else raise the documented error.

    Raises NotTextError (not a ``str``), EmptyTextError (empty or whitespace only) or
    TextTooLargeError (more than ``max_chars`` characters, before or after normalisation:
    NFKC turns some characters into up to 18).
    """
    if not isinstance(text, str):
        raise NotTextError(f"{name} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise EmptyTextError(f"{name} is empty or whitespace only")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from JSON "\ud800"
        raise NotTextError(
            f"{name} is not valid Unicode (unpaired surrogate at character {exc.start})"
        ) from None
    if len(text) > max_chars:
        raise TextTooLargeError(
            f"{name} has {len(text):,} characters, over the limit of {max_chars:,} (MAX_TEXT_CHARS)"
        )
    if not text.isascii() and len(text) * MAX_EXPANSION > max_chars:
        _check_normalised_length(text, max_chars, name)
    return text


def _check_normalised_length(text: str, max_chars: int, name: str) -> None:
    """Refuse a text whose normal form exceeds ``max_chars``, normalising it a slice at a
    time and stopping as soon as it is clearly over, so refusing costs at most about
    ``max_chars`` characters of work (a whole 1,000,000 x U+FDFA text takes 6 s and
    360 MiB to normalise).

    The slices' normal forms add up to the whole's within a few characters per cut: the
    whole is one character longer where a cut splits a run of spaces (each slice strips
    its end), and up to ``CUT_SLACK`` shorter where a character composes with marks
    across a cut. Only the band in between is settled by normalising the whole text.
    """
    grown = 0
    for cuts, start in enumerate(range(0, len(text), NORMALISE_SLICE)):
        grown += len(normalise(text[start : start + NORMALISE_SLICE]))
        if grown - CUT_SLACK * cuts > max_chars:
            break
    else:
        if grown + cuts <= max_chars or len(normalise(text)) <= max_chars:
            return
    raise TextTooLargeError(
        f"{name} has {len(text):,} characters but grows past {max_chars:,} when "
        "normalised (NFKC expands some characters, U+FDFA to 18), over the limit "
        "(MAX_TEXT_CHARS)"
    )
