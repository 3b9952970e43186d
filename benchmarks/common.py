"""Shared helpers: real and synthetic corpora, timing, JSON output."""

from __future__ import annotations

import json
import os
import platform
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DEBIAN_DOCS = Path("/usr/share/doc")
COMMON_LICENSES = Path("/usr/share/common-licenses")


def debian_paragraphs(limit: int, min_chars: int = 200, max_chars: int = 3000) -> list[str]:
    """Real text: paragraphs of the copyright/licence files a Debian machine carries.

    Licence boilerplate repeats across packages with small edits, so the set has genuine
    near-duplicates. Deterministic (sorted files, in order); read at run time, never shipped.
    """
    files = sorted(DEBIAN_DOCS.glob("*/copyright")) + sorted(COMMON_LICENSES.glob("*"))
    out: list[str] = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for para in text.split("\n\n"):
            para = para.strip()
            if min_chars <= len(para) <= max_chars:
                out.append(para)
                if len(out) >= limit:
                    return out
    if len(out) < limit:
        raise SystemExit(f"only {len(out)} real paragraphs found under {DEBIAN_DOCS}; need {limit}")
    return out


def synthetic_docs(n: int, chars: int, seed: int = 0, dup_share: float = 0.2) -> list[str]:
    """``n`` documents of about ``chars`` characters; ``dup_share`` are 5%-word-edited copies."""
    rng = random.Random(seed)
    vocab = [
        "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(5000)
    ]
    docs: list[str] = []
    while len(docs) < n:
        if docs and rng.random() < dup_share:
            words = rng.choice(docs).split()
            docs.append(" ".join(w if rng.random() > 0.05 else rng.choice(vocab) for w in words))
            continue
        words = []
        while sum(len(w) + 1 for w in words) < chars:
            words.append(rng.choice(vocab))
        docs.append(" ".join(words))
    return docs


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        **data,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps(data, indent=2))
    return path
