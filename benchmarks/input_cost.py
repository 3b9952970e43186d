"""Worst-case cost per input size: pathological texts against the cost model.

    python -m benchmarks.input_cost [--sizes 1000,10000,100000,1000000] [--baseline-max 60]

For each size and shape (one huge sentence, prose, tiny distinct sentences, thousands of
similar sentences, two wide-alphabet halves, NFKC-expanding characters; comparisons with
``ratio`` and ``partial_ratio``) it records the model's estimate
(``redundancy.core.cost``), the CPU seconds and tracemalloc peak of ``analyze`` /
``similarity``, and whether the input was accepted or refused. The model must bound
what is measured (``measured / estimate`` <= 1 within noise), and no accepted input may
cost more than ``MAX_WORK_SECONDS`` plus its linear work.

Baseline in the same run, what a user would run instead: plain rapidfuzz on the same
input, normalised the same way, without our short-circuits or limits
(``process.cdist`` over the sentences, ``fuzz.<scorer>`` on the pair), run only when its
own estimate is under ``--baseline-max`` seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import string
import time
import tracemalloc
from collections.abc import Callable
from itertools import product
from typing import Any

import numpy as np
from rapidfuzz import fuzz, process

from benchmarks.common import write_result
from redundancy.core import analyze, normalise, similarity
from redundancy.core.cost import (
    DEFAULT_MAX_WORK_SECONDS,
    estimate_analysis,
    estimate_comparison,
    pair_seconds,
)
from redundancy.core.pairs import uint8_cutoff
from redundancy.core.text import split_sentences
from redundancy.errors import InvalidInputError

RNG = random.Random(7)
WORDS = ["".join(RNG.choices(string.ascii_lowercase, k=RNG.randint(2, 9))) for _ in range(3000)]
CJK = [chr(0x4E00 + i) for i in range(3000)]


def one_sentence(n: int) -> str:
    return " ".join(RNG.choices(WORDS, k=n // 5 + 1))[:n]


def prose(n: int) -> str:
    out: list[str] = []
    while sum(map(len, out)) + len(out) < n:
        out.append(" ".join(RNG.choices(WORDS, k=RNG.randint(8, 25))).capitalize() + ".")
    return " ".join(out)[:n]


def tiny_sentences(n: int) -> str:
    tiny = ["".join(p) + "." for k in (2, 3, 4) for p in product(string.ascii_lowercase, repeat=k)]
    return " ".join(tiny[: n // 5 + 1])[:n]


def similar_sentences(n: int) -> str:
    return " ".join(f"The item {k:07d} ships today." for k in range(n // 30 + 1))[:n]


def wide_halves(n: int) -> str:
    half = (n - 2) // 2
    return "".join(RNG.choices(CJK, k=half)) + "\n\n" + "".join(RNG.choices(CJK, k=half))


def expanding(n: int) -> str:
    return "\ufdfa" * n


ANALYSES: dict[str, Callable[[int], str]] = {
    "one sentence": one_sentence,
    "prose": prose,
    "tiny distinct sentences": tiny_sentences,
    "similar sentences": similar_sentences,
    "two wide-alphabet halves": wide_halves,
    "U+FDFA (x18 under NFKC)": expanding,
}


def measure(fn: Callable[[], Any]) -> tuple[str, float, float]:
    """(outcome, CPU seconds, tracemalloc peak MiB): CPU from a plain run, the peak from
    a second, traced one (tracing slows code that allocates per character)."""
    began = time.process_time()
    try:
        fn()
        outcome = "ok"
    except InvalidInputError as exc:
        outcome = type(exc).__name__
    seconds = time.process_time() - began
    tracemalloc.start()
    with contextlib.suppress(InvalidInputError):
        fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return outcome, seconds, peak / 2**20


def cpu_seconds(fn: Callable[[], Any]) -> float:
    began = time.process_time()
    fn()
    return time.process_time() - began


def plain_sentences(text: str) -> list[str]:
    return [
        " ".join(normalise(s).split()) for s in split_sentences(text)
    ]  # normalised like ours, but not deduplicated


def baseline_analysis(text: str) -> None:
    """What a user would run instead: cdist over every sentence, in blocks of 2,048 rows."""
    sentences = np.asarray(plain_sentences(text), dtype=object)
    for r0 in range(0, len(sentences), 2048):
        process.cdist(
            sentences[r0 : r0 + 2048],
            sentences,
            scorer=fuzz.ratio,
            processor=None,
            score_cutoff=uint8_cutoff(0.8),
            dtype=np.uint8,
            workers=1,
        )


def baseline_estimate(text: str) -> float:
    """The model's cost of the baseline (every sentence with every sentence, itself too)."""
    lengths = [len(s) for s in plain_sentences(text)]
    total = sum(lengths)
    return len(lengths) ** 2 * 2e-8 + (total * total / 64 + total * len(lengths)) * 2.5e-8


def row(kind: str, shape: str, size: int, estimate: float, ours: tuple[str, float, float],
        baseline: float | None, baseline_estimate: float) -> dict[str, Any]:  # fmt: skip
    outcome, seconds, peak = ours
    return {
        "kind": kind,
        "shape": shape,
        "chars": size,
        "estimate_s": round(estimate, 3),
        "outcome": outcome,
        "cpu_s": round(seconds, 3),
        "peak_mib": round(peak, 1),
        "measured_over_estimate": round(seconds / estimate, 2) if outcome == "ok" else None,
        "baseline_cpu_s": None if baseline is None else round(baseline, 3),
        "baseline_estimate_s": round(baseline_estimate, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--baseline-max", type=float, default=60.0)
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for shape, make in ANALYSES.items():
            text = make(size)
            try:
                estimate = estimate_analysis(text) if len(normalise(text)) <= 1_000_000 else 0.0
            except InvalidInputError:
                estimate = 0.0
            ours = measure(lambda text=text: analyze(text))
            base_est = baseline_estimate(text) if shape != "U+FDFA (x18 under NFKC)" else 0.0
            baseline = None
            if base_est <= args.baseline_max and shape != "U+FDFA (x18 under NFKC)":
                baseline = cpu_seconds(lambda text=text: baseline_analysis(text))
            rows.append(row("analyze", shape, size, estimate, ours, baseline, base_est))
            print(rows[-1], flush=True)
        for algorithm, wide in (("ratio", False), ("ratio", True), ("partial_ratio", False)):
            n = size if algorithm == "ratio" else min(size, 2_000)
            a, b = (wide_halves(2 * n)[:n], wide_halves(2 * n)[-n:]) if wide else (
                one_sentence(n), one_sentence(n))  # fmt: skip
            estimate = estimate_comparison(a, b, algorithm)
            ours = measure(lambda a=a, b=b, alg=algorithm: similarity(a, b, alg))
            base_est = pair_seconds(algorithm, len(a), len(b), wide=wide)
            baseline = None
            if base_est <= args.baseline_max:
                scorer = getattr(fuzz, algorithm)
                baseline = cpu_seconds(lambda a=a, b=b, s=scorer: s(normalise(a), normalise(b)))
            shape = f"{algorithm}, {'wide' if wide else 'narrow'} alphabet"
            rows.append(row("compare", shape, n, estimate, ours, baseline, base_est))
            print(rows[-1], flush=True)
    accepted = [r for r in rows if r["outcome"] == "ok"]
    write_result(
        "input_cost",
        {
            "max_work_seconds": DEFAULT_MAX_WORK_SECONDS,
            "rows": rows,
            "max_measured_over_estimate": max(r["measured_over_estimate"] for r in accepted),
            "slowest_accepted_cpu_s": max(r["cpu_s"] for r in accepted),
            "slowest_refusal_cpu_s": max(
                (r["cpu_s"] for r in rows if r["outcome"] != "ok"), default=0.0
            ),
        },
    )


if __name__ == "__main__":
    main()
