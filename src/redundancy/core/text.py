"""Text normalisation, hashing, tokenising and input limits.

Normalisation (used for hashing and for every comparison) is, in this order:
0. a run of more than 30 combining marks gets U+034F COMBINING GRAPHEME JOINER after every
   30 (Unicode's Stream-Safe Text Format, UAX #15), because CPython reorders a run in
   quadratic time: 40,000 mixed marks after one letter took 1.4 s, 1,000,000 would take a
   quarter of an hour; real text never has such runs;
1. Unicode NFKC, so compatibility forms compare equal (``ﬁ`` -> ``fi``, full-width digits);
2. ``str.casefold()``, so case never matters (``Straße`` == ``STRASSE``);
3. every run of whitespace becomes one space, and the ends are stripped.
Punctuation is kept: it carries meaning for sentence similarity.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from functools import cache

import numpy as np

from redundancy.errors import EmptyTextError, InvalidInputError, NotTextError, TextTooLargeError

DEFAULT_MAX_CHARS = 1_000_000
"""Longest text accepted, in characters, before and after normalisation (configurable
with ``MAX_TEXT_CHARS``)."""

MAX_EXPANSION = 18
"""Most characters one code point becomes under ``normalise`` (U+FDFA under NFKC; a unit
test checks every code point). Shorter texts cannot outgrow the limit."""

CUT_SLACK = 5
"""Characters the slices of a text can have beyond its whole normal form, per cut: a
composition across the cut saves up to 4 (a character with three combining marks, or a
Hangul syllable from its jamo), and the cut may add one joiner to a run of marks."""

STREAM_SAFE_RUN = 30
"""Longest run of non-starters (combining marks) left as is (UAX #15)."""
GRAPHEME_JOINER = "\u034f"
NON_STARTERS_FROM, NON_STARTERS_TO = 0x300, 0x1F000
"""Where the code points whose decomposition starts with a non-starter lie (a unit test
checks every code point outside)."""

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
    safe = stream_safe(text)
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", safe).casefold()).strip()


def stream_safe(text: str) -> str:
    """``text`` with a grapheme joiner after every ``STREAM_SAFE_RUN`` non-starters of a
    longer run, so normalising it costs linear time. Text without a character from
    U+0300 on (ASCII, Latin-1) is returned untouched, without looking further."""
    if text.isascii() or max(text) < "\u0300":
        return text
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    table = _non_starter_table()
    marks = np.zeros(codes.size + 2, dtype=np.int8)  # a 0 either side closes every run
    marks[1:-1] = table[np.minimum(codes, table.size - 1)]
    if int(marks.sum()) <= STREAM_SAFE_RUN:
        return text
    edges = np.flatnonzero(np.diff(marks))
    starts, ends = edges[::2], edges[1::2]
    long_runs = (ends - starts) > STREAM_SAFE_RUN
    if not long_runs.any():
        return text
    parts, last = [], 0
    for start, end in zip(starts[long_runs].tolist(), ends[long_runs].tolist(), strict=True):
        parts.append(text[last:start])
        marks_run = text[start:end]
        step = STREAM_SAFE_RUN
        pieces = (marks_run[i : i + step] for i in range(0, len(marks_run), step))
        parts.append(GRAPHEME_JOINER.join(pieces))
        last = end
    parts.append(text[last:])
    return "".join(parts)


@cache
def _non_starter_table() -> np.ndarray:
    """1 for every code point below ``NON_STARTERS_TO`` whose decomposition starts with a
    non-starter (the last entry stands for every code point above: 0). Built on first
    use (about 0.07 s), from this Python's Unicode database."""
    table = np.zeros(NON_STARTERS_TO + 1, dtype=np.int8)
    for code in range(NON_STARTERS_FROM, NON_STARTERS_TO):
        table[code] = is_non_starter(chr(code))
    return table


def is_non_starter(char: str) -> bool:
    """True when ``char`` (or the first character it decomposes to) has a nonzero
    canonical combining class: it joins the preceding character's combining sequence."""
    if unicodedata.combining(char):
        return True
    if not unicodedata.decomposition(char):
        return False
    return unicodedata.combining(unicodedata.normalize("NFKD", char)[0]) != 0


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


CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
"""C0 control characters and DEL: never in an id (``validate_identifier``)."""


def validate_identifier(value: object, *, name: str, max_chars: int) -> str:
    """Return ``value`` if it can serve as an id a caller gives (a document's, a user's),
    else raise InvalidInputError naming ``name``.

    Ids become Redis keys and fields, JSON and log lines: one that is not a string, is
    empty or long, holds a control character (NUL, newline...) or a lone surrogate (JSON
    ``"\ud800"``, which no UTF-8 write accepts) must fail here, at the boundary, not
    half-way through a write.
    """
    if not isinstance(value, str) or not value or len(value) > max_chars:
        raise InvalidInputError(
            f"{name} must be a non-empty string of at most {max_chars} characters, "
            f"got {value!r:.80}"
        )
    if CONTROL_CHARACTERS.search(value):
        raise InvalidInputError(f"{name} {value!r:.80} contains a control character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{name} {value!r:.80} is not valid Unicode (unpaired surrogate at character "
            f"{exc.start})"
        ) from None
    return value


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
    whole is up to two characters longer (a cut splits a run of spaces, which each slice
    strips, or a long run of marks, which then gets one joiner fewer), and up to
    ``CUT_SLACK`` shorter (a character composes with marks across a cut). Only the band
    in between is settled by normalising the whole text.
    """
    grown = 0
    for cuts, start in enumerate(range(0, len(text), NORMALISE_SLICE)):
        grown += len(normalise(text[start : start + NORMALISE_SLICE]))
        if grown - CUT_SLACK * cuts > max_chars:
            break
    else:
        if grown + 2 * cuts <= max_chars or len(normalise(text)) <= max_chars:
            return
    raise TextTooLargeError(
        f"{name} has {len(text):,} characters but grows past {max_chars:,} when "
        "normalised (NFKC expands some characters, U+FDFA to 18), over the limit "
        "(MAX_TEXT_CHARS)"
    )
