"""Corpora for tests and benchmarks: synthetic with injected near-duplicates, and real.

Synthetic documents are made deterministically from a seed: pseudo-words built from
syllables, drawn with Zipf frequencies (so a few words are very common, like in prose),
in sentences of 6-18 words, about 1,500 characters each. A share of the documents are
copies of an earlier document (possibly itself a copy) with a given share of their words
edited: each edited word is deleted, replaced by another word, or followed by an inserted
word, in equal parts.

The real corpus is the licence and copyright texts a Debian machine carries
(``/usr/share/doc/*/copyright``, ``/usr/share/common-licenses/*``); nothing of it is
stored in this repository. Split into paragraphs it gives thousands of short documents
with many real near-duplicates (the same licence clause with other names and years).
"""

from __future__ import annotations

import glob
import os
import random
import re
from dataclasses import dataclass

import numpy as np

DEBIAN_GLOBS = ("/usr/share/doc/*/copyright", "/usr/share/common-licenses/*")
_CONSONANTS = [*"bcdfghjklmnprstvwz", "th", "ch", "sh", "st", "tr", "pl", "gr", "br", "qu"]
_VOWELS = ["a", "e", "i", "o", "u", "ea", "ou", "ai", "y", "ie"]


@dataclass(frozen=True)
class Corpus:
    ids: list[str]
    texts: list[str]
    copies: int
    """Documents made as edited copies of another (the injected near-duplicates)."""


def _vocabulary(rng: random.Random, size: int) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.choice((1, 1, 2, 2, 2, 3, 3, 4))
        word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
        if rng.random() < 0.4:
            word += rng.choice(_CONSONANTS)
        words.add(word)
    ordered = sorted(words)
    rng.shuffle(ordered)
    return ordered


def synthetic_corpus(
    n: int,
    *,
    seed: int = 0,
    copy_share: float = 0.1,
    edit_share: float = 0.05,
    length: tuple[int, int] = (1200, 1800),
    vocabulary: int = 20_000,
) -> Corpus:
    """``n`` documents of ``length`` characters; ``copy_share`` of them are copies of an
    earlier document with ``edit_share`` of their words edited."""
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    vocab = _vocabulary(rng, vocabulary)
    vocab_arr = np.asarray(vocab, dtype=object)
    lengths = np.fromiter((len(w) + 1 for w in vocab), dtype=np.int64)
    weights = 1.0 / np.arange(1, vocabulary + 1) ** 1.07
    cum = np.cumsum(weights) / weights.sum()
    texts: list[str] = []
    copies = 0
    for _ in range(n):
        if texts and rng.random() < copy_share:
            texts.append(_edited(texts[rng.randrange(len(texts))], rng, vocab, cum, edit_share))
            copies += 1
            continue
        target = rng.uniform(*length)
        ids = np.searchsorted(cum, nprng.random(int(target // 3) + 8))
        cut = int(np.searchsorted(np.cumsum(lengths[ids]), target)) + 1
        words = list(vocab_arr[ids[:cut]])
        pos = 0
        while pos < len(words):  # sentences of 6-18 words, some commas
            pos += rng.randint(6, 18)
            if pos <= len(words):
                words[pos - 1] += "."
        for i in range(len(words)):
            if rng.random() < 0.06 and not words[i].endswith("."):
                words[i] += ","
        texts.append(" ".join(words))
    return Corpus([f"doc-{i:06d}" for i in range(n)], texts, copies)


def _edited(text: str, rng: random.Random, vocab: list[str], cum: np.ndarray, share: float) -> str:
    out: list[str] = []
    for word in text.split(" "):
        r = rng.random()
        if r < share / 3:
            continue  # deleted
        if r < 2 * share / 3:
            out.append(vocab[int(np.searchsorted(cum, rng.random()))])  # replaced
        elif r < share:
            out += [word, vocab[int(np.searchsorted(cum, rng.random()))]]  # inserted after
        else:
            out.append(word)
    return " ".join(out)


def debian_files() -> list[str]:
    return sorted(p for pattern in DEBIAN_GLOBS for p in glob.glob(pattern) if os.path.isfile(p))


def debian_corpus(
    *,
    paragraphs: bool = False,
    min_chars: int = 1,
    max_chars: int | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> Corpus:
    """The machine's licence/copyright texts (whole files, or blank-line paragraphs),
    unreadable files skipped; ``limit`` keeps a seeded random sample. Empty if absent."""
    ids: list[str] = []
    texts: list[str] = []
    for path in debian_files():
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
        except (OSError, UnicodeDecodeError):
            continue
        parts = re.split(r"\n\s*\n", text) if paragraphs else [text]
        for n, part in enumerate(parts):
            size = len(part.strip())
            if size < min_chars or (max_chars is not None and size > max_chars):
                continue
            ids.append(f"{path}#{n}" if paragraphs else path)
            texts.append(part)
    if limit is not None and limit < len(texts):
        chosen = sorted(random.Random(seed).sample(range(len(texts)), limit))
        ids, texts = [ids[i] for i in chosen], [texts[i] for i in chosen]
    return Corpus(ids, texts, 0)


NEAR_COPY_SHARES = (0.05, 0.15, 0.3, 0.4)
"""Edited shares of ``near_copies`` (0.05 as the generator's copies; 0.4 scores 0.77-0.84)."""


def near_copies(
    texts: list[str],
    count: int,
    *,
    seed: int = 0,
    shares: tuple[float, ...] = NEAR_COPY_SHARES,
    vocabulary: int = 20_000,
) -> list[tuple[int, str]]:
    """``count`` copies of randomly chosen ``texts`` (position, copy) with a share of
    their words edited as in ``synthetic_corpus`` (cycling through ``shares``, so some
    copies sit near a 0.8 threshold: 0.4 scores 0.77-0.84), in the vocabulary of
    ``synthetic_corpus(seed=0)``."""
    vocab = _vocabulary(random.Random(0), vocabulary)
    weights = 1.0 / np.arange(1, vocabulary + 1) ** 1.07
    cum = np.cumsum(weights) / weights.sum()
    rng = random.Random(seed)
    out = []
    for i in range(count):
        source = rng.randrange(len(texts))
        out.append((source, _edited(texts[source], rng, vocab, cum, shares[i % len(shares)])))
    return out
