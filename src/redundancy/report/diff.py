"""Word-level differences between two documents, bounded so a huge pair stays small.

Only the first ``max_chars`` characters of each side are compared and shown (cut at a word
boundary); the page says so. Tokens are words with their trailing space, so a changed word
is highlighted whole and the token count stays near the word count.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rapidfuzz.distance import Indel

TOKEN = re.compile(r"\w+\s*|[^\w\s]\s*|\s+")
"""A word or one punctuation mark, each with the whitespace after it; or leading space."""


@dataclass(frozen=True)
class Segment:
    """A run of tokens that is the same on both sides (``changed`` False) or only here."""

    text: str
    changed: bool


@dataclass(frozen=True)
class Side:
    """One document as shown: its segments, how many characters it has and shows."""

    segments: tuple[Segment, ...]
    total_chars: int
    shown_chars: int

    @property
    def truncated(self) -> bool:
        return self.shown_chars < self.total_chars


@dataclass(frozen=True)
class WordDiff:
    left: Side
    right: Side

    @property
    def identical(self) -> bool:
        """No highlighted difference in the parts shown."""
        return not any(s.changed for s in (*self.left.segments, *self.right.segments))


def clip(text: str, max_chars: int) -> str:
    """The first ``max_chars`` characters, without a word cut in half."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    if text[max_chars].isalnum() and head[-1:].isalnum():
        cut = re.search(r"\w+$", head)
        if cut is not None and cut.start() > 0:
            head = head[: cut.start()]
    return head


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


def word_diff(a: str, b: str, max_chars: int) -> WordDiff:
    """Align the words of ``a`` and ``b`` on their longest common subsequence (rapidfuzz's
    Indel opcodes: bit-parallel, so even a pathological pair of ``max_chars`` each takes
    milliseconds, where ``difflib`` takes seconds) and mark what only one side has."""
    shown_a, shown_b = clip(a, max_chars), clip(b, max_chars)
    ta, tb = tokens(shown_a), tokens(shown_b)
    left: list[Segment] = []
    right: list[Segment] = []
    for op in Indel.opcodes(ta, tb):
        changed = op.tag != "equal"
        _extend(left, ta[op.src_start : op.src_end], changed)
        _extend(right, tb[op.dest_start : op.dest_end], changed)
    return WordDiff(
        Side(tuple(left), len(a), len(shown_a)),
        Side(tuple(right), len(b), len(shown_b)),
    )


def _extend(side: list[Segment], run: list[str], changed: bool) -> None:
    """Append a run of tokens, joined to the previous segment when of the same kind; a
    changed run's trailing space is not highlighted (unless it is all the run has)."""
    text = "".join(run)
    core = text.rstrip() if changed else text
    for part, kind in ((core or text, changed), (text[len(core) :] if core else "", False)):
        if not part:
            continue
        if side and side[-1].changed == kind:
            side[-1] = Segment(side[-1].text + part, kind)
        else:
            side.append(Segment(part, kind))
