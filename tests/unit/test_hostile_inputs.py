"""Hostile input: property-based fuzzing of the core, the task schemas and the CLI input
readers, each input held to a CPU and memory budget.

The budget of an input is its documented worst case (``redundancy.core.cost``: the linear
work and memory per normalised character, plus the scoring estimate, which is refused
above ``MAX_WORK_SECONDS``), times ``SLACK`` so a shared machine does not flake, plus a
fixed allowance. It is a budget, not a speed test: a regression that makes some input
quadratic, or a path that scores what it need not, blows it by orders of magnitude.

CI runs ``CRD_FUZZ_EXAMPLES`` examples per property (default 12) on texts of up to
``CRD_FUZZ_MAX_CHARS`` characters (default 40,000); raise both for a longer hunt:

    CRD_FUZZ_EXAMPLES=500 CRD_FUZZ_MAX_CHARS=1000000 pytest tests/unit/test_hostile_inputs.py
"""

from __future__ import annotations

import json
import os
import random
import string
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice, product
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redundancy.cli import EXIT_ITEMS_FAILED, cli
from redundancy.cli.inputs import read_inputs
from redundancy.core import SCORERS, analyze, near_duplicates, normalise, similarity
from redundancy.core.cost import (
    CHAR_BYTES,
    CHAR_SECONDS,
    DEFAULT_MAX_WORK_SECONDS,
    SEARCH_BYTES,
    estimate_analysis,
    estimate_comparison,
    pairs_seconds,
)
from redundancy.core.text import DEFAULT_MAX_CHARS
from redundancy.errors import InvalidInputError, TextTooLargeError
from redundancy.schemas import AnalyzeRequest, BatchOptions, CompareRequest, validate
from redundancy.tasks import analyze_content, compare_texts, process_batch

EXAMPLES = int(os.environ.get("CRD_FUZZ_EXAMPLES", "12"))
MAX_CHARS = int(os.environ.get("CRD_FUZZ_MAX_CHARS", "40000"))
SLACK = 3.0
"""Budgets are this many times the documented worst case."""
ALLOWANCE_SECONDS = 1.0
ALLOWANCE_BYTES = 8 * 2**20
"""Fixed part of every budget: interpreter, result models, a cold cache."""

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not os.environ.get("CRD_FUZZ_EXAMPLES"),  # CI: the same inputs every run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- pathological texts ---------------------------------------------------------------

WORDS = ["".join(p) for p in islice(product(string.ascii_lowercase, repeat=3), 0, 17576, 37)]
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
CJK = [chr(0x4E00 + i) for i in range(3000)]


def one_huge_sentence(n: int, rng: random.Random) -> str:
    return " ".join(rng.choices(WORDS, k=n // 4 + 1))[:n]


def many_tiny_sentences(n: int, rng: random.Random) -> str:
    tiny = ["".join(p) + "." for p in product(string.ascii_lowercase, repeat=3)]
    rng.shuffle(tiny)
    return " ".join(tiny[: n // 5 + 1])


def similar_sentences(n: int, rng: random.Random) -> str:
    return " ".join(f"The item {k:06d} ships today." for k in range(n // 30 + 1))


def expanding(n: int, rng: random.Random) -> str:
    return "".join(rng.choice(["\ufdfa", "\u3300", "\u00df", " ", "a"]) for _ in range(n))


def combining_marks(n: int, rng: random.Random) -> str:
    return "a" + "".join(rng.choice("\u0301\u0308\u0327\u0323\u0302") for _ in range(n))


def invisible_and_bidi(n: int, rng: random.Random) -> str:
    return "".join(rng.choice(INVISIBLE + "ab. ") for _ in range(n))


def lone_surrogate(n: int, rng: random.Random) -> str:
    text = one_huge_sentence(n, rng)
    at = rng.randrange(len(text) + 1)
    return text[:at] + "\ud800" + text[at:]


def nuls(n: int, rng: random.Random) -> str:
    return "".join(rng.choice(["\x00", "word", " ", ". "]) for _ in range(n // 3 + 1))


def long_word(n: int, rng: random.Random) -> str:
    return rng.choice("xyz") * n


def repeated_sentence(n: int, rng: random.Random) -> str:
    return "The same sentence again. " * (n // 25 + 1)


def wide_halves(n: int, rng: random.Random) -> str:
    half = n // 2
    return "".join(rng.choices(CJK, k=half)) + ".\n\n" + "".join(rng.choices(CJK, k=half))


def empty_or_blank(n: int, rng: random.Random) -> str:
    return rng.choice(["", " ", "\n\t \u3000", "\u200b"])


SHAPES: list[Callable[[int, random.Random], str]] = [
    one_huge_sentence,
    many_tiny_sentences,
    similar_sentences,
    expanding,
    combining_marks,
    invisible_and_bidi,
    lone_surrogate,
    nuls,
    long_word,
    repeated_sentence,
    wide_halves,
    empty_or_blank,
]


@st.composite
def hostile_texts(draw: Any, max_chars: int = MAX_CHARS) -> str:
    """One pathological text, or arbitrary Unicode (including lone surrogates)."""
    if draw(st.booleans()) and draw(st.booleans()):
        return draw(st.text(max_size=2_000))
    shape = draw(st.sampled_from(SHAPES))
    size = draw(st.integers(1, 2_000) | st.integers(max_chars // 4, max_chars))  # small or big
    return shape(size, random.Random(draw(st.integers(0, 2**32))))


# --- measuring ------------------------------------------------------------------------


@dataclass
class Run:
    outcome: Any
    seconds: float
    peak: int


def run(fn: Callable[[], Any]) -> Run:
    """CPU seconds and tracemalloc peak of ``fn``; an input error is an outcome too."""
    tracemalloc.start()
    started = time.process_time()
    try:
        outcome = fn()
    except InvalidInputError as exc:  # any other exception fails the test
        outcome = exc
    finally:
        seconds = time.process_time() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return Run(outcome, seconds, peak)


def assert_within(got: Run, seconds: float, chars: int, extra_bytes: int = 0) -> None:
    """``got`` is within SLACK x the documented worst case (seconds; CHAR_BYTES per
    normalised character plus the search's fixed memory) plus the allowance."""
    time_budget = SLACK * seconds + ALLOWANCE_SECONDS
    memory_budget = SLACK * (CHAR_BYTES * chars + SEARCH_BYTES + extra_bytes) + ALLOWANCE_BYTES
    assert got.seconds <= time_budget, f"{got.seconds:.2f} s over a budget of {time_budget:.2f} s"
    assert got.peak <= memory_budget, (
        f"peak {got.peak / 2**20:.1f} MiB over {memory_budget / 2**20:.1f}"
    )


def documented_seconds(estimate: Callable[[], float], outcome: Any, chars: int) -> float:
    """The worst case the model documents for this input: its estimate, capped at the
    work limit (costlier input is refused before scoring), or for a text refused as too
    large, the linear work of MAX_TEXT_CHARS (the check stops there)."""
    if isinstance(outcome, TextTooLargeError):
        return CHAR_SECONDS * DEFAULT_MAX_CHARS
    if isinstance(outcome, InvalidInputError) and not chars:
        return 0.0
    try:
        cost = estimate()
    except (UnicodeEncodeError, InvalidInputError):
        return CHAR_SECONDS * DEFAULT_MAX_CHARS
    return min(cost, CHAR_SECONDS * chars + DEFAULT_MAX_WORK_SECONDS)


def normalised_length(text: Any) -> int:
    try:
        return len(normalise(text)) if isinstance(text, str) else 0
    except Exception:
        return 0


# --- the core -------------------------------------------------------------------------


@fuzz
@given(text=hostile_texts(), algorithm=st.sampled_from(list(SCORERS)))
def test_analysis_of_any_text_stays_within_its_budget(text, algorithm):
    # When any text is analysed
    got = run(lambda: analyze(text, algorithm=algorithm))
    # Then it gives a result or a documented input error, within its budget
    chars = min(normalised_length(text), DEFAULT_MAX_CHARS)
    seconds = documented_seconds(lambda: estimate_analysis(text, algorithm), got.outcome, chars)
    assert_within(got, seconds, chars)


@pytest.mark.parametrize("algorithm", ["ratio", "partial_ratio", "token_set_ratio"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: shape.__name__)
def test_every_pathological_shape_at_full_size_stays_within_its_budget(shape, algorithm):
    # Given each pathological shape at the largest size the run allows (CI: 40,000)
    text = shape(MAX_CHARS, random.Random(1))
    # When analysed, and compared with a text of the same shape
    analysis = run(lambda: analyze(text, algorithm=algorithm))
    other = shape(MAX_CHARS, random.Random(2))
    comparison = run(lambda: similarity(text, other, algorithm))
    # Then each stays within its documented worst case
    chars = min(normalised_length(text), DEFAULT_MAX_CHARS)
    assert_within(
        analysis,
        documented_seconds(lambda: estimate_analysis(text, algorithm), analysis.outcome, chars),
        chars,
    )
    both = min(chars + normalised_length(other), 2 * DEFAULT_MAX_CHARS)
    estimate = lambda: estimate_comparison(text, other, algorithm)  # noqa: E731
    assert_within(comparison, documented_seconds(estimate, comparison.outcome, both), both)


@fuzz
@given(a=hostile_texts(), b=hostile_texts(), algorithm=st.sampled_from(list(SCORERS)))
def test_comparison_of_any_texts_stays_within_its_budget(a, b, algorithm):
    got = run(lambda: similarity(a, b, algorithm))
    chars = min(normalised_length(a) + normalised_length(b), 2 * DEFAULT_MAX_CHARS)
    seconds = documented_seconds(lambda: estimate_comparison(a, b, algorithm), got.outcome, chars)
    assert_within(got, seconds, chars)
    if not isinstance(got.outcome, InvalidInputError):
        assert 0.0 <= got.outcome.similarity_score <= 1.0


@st.composite
def hostile_corpora(draw: Any) -> list[str]:
    """Thousands of identical copies, tiny distinct texts and pathological ones, mixed."""
    copies = draw(st.integers(0, 5_000))
    texts = ["This page intentionally left blank."] * copies
    texts += [f"{w}." for w in draw(st.lists(st.sampled_from(WORDS), max_size=300))]
    texts += draw(st.lists(hostile_texts(max_chars=2_000), max_size=20))
    random.Random(draw(st.integers(0, 2**32))).shuffle(texts)
    return texts


@fuzz
@given(texts=hostile_corpora(), mode=st.sampled_from(["auto", "exact", "indexed", "all-pairs"]))
def test_near_duplicates_of_any_corpus_stay_within_their_budget(texts, mode):
    got = run(lambda: near_duplicates(texts, 0.8, mode=mode))
    distinct = {normalise(t) for t in texts if normalised_length(t)}
    chars = sum(normalised_length(t) for t in texts)
    # (all-pairs over the distinct texts bounds every mode; identical copies cost a group)
    seconds = CHAR_SECONDS * chars + pairs_seconds("ratio", [len(t) for t in distinct])
    result = got.outcome
    found = 0 if isinstance(result, InvalidInputError) else len(result.pairs)
    assert_within(got, seconds, chars, extra_bytes=PAIR_BYTES * found + ID_BYTES * len(texts))
    if not isinstance(result, InvalidInputError):
        assert sum(g.count for g in result.duplicate_groups) <= len(texts)
        assert len(result.pairs) <= len(distinct) * (len(distinct) - 1) // 2


PAIR_BYTES = 1_500
"""A reported pair's result object (two ids, scores, copies)."""
ID_BYTES = 200
"""A document's id in the groups and clusters."""


# --- the task schemas and tasks ---------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
"""Any JSON value a caller could send in a task message."""


@fuzz
@given(fields=st.dictionaries(st.sampled_from(["text", "text_a", "text_b", "threshold",
                                               "algorithm", "mode", "webhook_url",
                                               "expand_identical", "extra"]), JSON))  # fmt: skip
def test_request_schemas_accept_or_refuse_any_json_clearly(fields):
    for model in (AnalyzeRequest, CompareRequest, BatchOptions):
        try:
            validate(model, **fields)
        except InvalidInputError as exc:
            assert str(exc).startswith(f"invalid {model.__name__}: ")


@fuzz
@given(text=JSON | hostile_texts(max_chars=5_000), threshold=JSON | st.floats(0, 1),
       algorithm=JSON | st.sampled_from(list(SCORERS)))  # fmt: skip
def test_analysis_and_comparison_tasks_fail_only_with_input_errors(text, threshold, algorithm):
    # When the tasks get any JSON (eagerly: the task code, validation and results cache)
    calls = [
        (analyze_content, (text, threshold, algorithm)),
        (compare_texts, (text, "some other text", algorithm, threshold)),
    ]
    for task, args in calls:
        got = run(lambda task=task, args=args: task.apply(args=args).get())
        # Then each returns a result or an input error, within the small-input budget
        if not isinstance(got.outcome, InvalidInputError):
            assert isinstance(got.outcome, dict)
        assert_within(got, CHAR_SECONDS * 10_000 + 2.0, 10_000)


@settings(parent=fuzz, max_examples=max(3, EXAMPLES // 3))
@given(items=JSON | st.lists(JSON | hostile_texts(max_chars=3_000), max_size=30))
def test_process_batch_fails_only_with_input_errors_and_reports_bad_items(items):
    got = run(lambda: process_batch.apply(args=(items,)).get())
    if not isinstance(got.outcome, InvalidInputError):
        assert got.outcome["document_count"] == len(items)
        assert got.outcome["succeeded"] + got.outcome["failed"] == len(items)
    assert_within(got, CHAR_SECONDS * 100_000 + 5.0, 100_000)


# --- the CLI input readers ----------------------------------------------------------------

LINES = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda t, i: json.dumps({"id": i, "text": t}).encode(), hostile_texts(2_000), JSON),
    st.integers(1, 50_000).map(lambda n: b"[" * n + b"]" * n),  # nesting past the recursion limit
    st.integers(4_400, 20_000).map(lambda n: b'{"text": ' + b"9" * n + b"}"),  # huge integer
    st.sampled_from([b"\xef\xbb\xbf{}", b"\xff\xfe", b"\x00" * 10, b'{"text": "\\ud800"}']),
)


@fuzz
@given(lines=st.lists(LINES, max_size=20), raw=st.binary(max_size=5_000))
def test_input_readers_turn_any_bytes_into_items_never_errors(tmp_path_factory, lines, raw):
    # Given a JSONL file of any lines and a plain file of any bytes
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "docs.jsonl").write_bytes(b"\n".join(lines))
    (folder / "any.txt").write_bytes(raw)
    # When they are read (the folder, and the JSONL file alone)
    got = run(
        lambda: list(read_inputs([str(folder)])) + list(read_inputs([str(folder / "docs.jsonl")]))
    )
    # Then every line and file is an item, with its text or the reason it is unreadable
    assert not isinstance(got.outcome, InvalidInputError)
    for item in got.outcome:
        assert (item.error is None) != (item.text is None) or item.error
    size = sum(map(len, lines)) + len(raw)
    assert_within(got, CHAR_SECONDS * size * 4, size * 4)


@settings(parent=fuzz, max_examples=max(2, EXAMPLES // 4))
@given(texts=st.lists(hostile_texts(max_chars=3_000), min_size=1, max_size=15))
def test_crd_batch_on_hostile_jsonl_reports_items_and_never_crashes(tmp_path_factory, texts):
    folder = tmp_path_factory.mktemp("batch")
    source = folder / "in.jsonl"
    source.write_text(
        "".join(json.dumps({"id": f"d{n}", "text": t}) + "\n" for n, t in enumerate(texts))
    )
    out = folder / "out.jsonl"
    result = CliRunner().invoke(cli, ["batch", str(source), "--json", "--out", str(out)])
    assert result.exit_code in (0, EXIT_ITEMS_FAILED), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    data = json.loads(result.output[result.output.index("{") :])
    assert data["document_count"] == len(texts)
