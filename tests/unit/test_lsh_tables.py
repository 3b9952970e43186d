"""The distributed indexed search's table arithmetic (``redundancy.core.lsh_tables``):
the tables of many chunks and partitions give exactly the in-process candidates."""

from __future__ import annotations

import numpy as np
import pytest
from benchmarks.corpora import synthetic_corpus
from rapidfuzz import fuzz

from redundancy.core.lsh import LSHParams, candidates, unique_pairs
from redundancy.core.lsh_tables import (
    RECORD,
    bucket_candidates,
    bucket_records,
    comparable,
    partition_count,
    partition_tables,
    split_by,
    unpack_pairs,
    verify_candidates,
)
from redundancy.core.neardup import Document, valid_documents


@pytest.fixture(scope="module")
def corpus():
    return synthetic_corpus(300, seed=11, copy_share=0.3)


def test_tables_over_chunks_and_partitions_give_the_in_process_candidates(corpus):
    # Given distinct documents, their LSH parameters, 4 partitions and chunks of 70
    docs = valid_documents(enumerate(corpus.texts), max_chars=1_000_000)
    assert len({d.content_hash for d in docs}) == len(docs) == 300
    params = LSHParams.for_threshold(0.8, len(docs))
    partitions, chunk_size = 4, 70
    # When every chunk is signed, every partition bucketed and every chunk's tables joined
    signed = [
        partition_tables(docs[s : s + chunk_size], "ratio", params, partitions)
        for s in range(0, len(docs), chunk_size)
    ]
    by_chunk: dict[int, list[np.ndarray]] = {}
    for p in range(partitions):
        records = bucket_records([tables[p].tobytes() for tables in signed])
        for chunk, pairs in bucket_candidates(records, chunk_size).items():
            by_chunk.setdefault(chunk, []).append(pairs)
    found = {chunk: unpack_pairs(np.concatenate(tables)) for chunk, tables in by_chunk.items()}
    # Then the candidates are those of the in-process search, each filed by its lower chunk
    _, texts, _ = comparable(docs, "ratio")
    rounds = list(candidates(texts, params))
    lo, hi = unique_pairs(
        np.concatenate([r[0] for r in rounds]), np.concatenate([r[1] for r in rounds])
    )
    expected = set(zip(lo.tolist(), hi.tolist(), strict=True))
    got = {
        (a, b)
        for low, high in found.values()
        for a, b in zip(low.tolist(), high.tolist(), strict=True)
    }
    assert len(expected) > 100 and got == expected
    assert all((low // chunk_size == chunk).all() for chunk, (low, _) in found.items())


def test_a_partition_without_colliding_keys_has_no_candidates():
    # Given records whose band keys all differ (a partition of unrelated texts)
    records = np.zeros(5, dtype=RECORD)
    records["key"] = [1, 2, 3, 4, 5]
    records["text"] = [10, 20, 30, 40, 50]
    records["pos"] = [0, 1, 2, 3, 4]
    # When it is bucketed, Then no chunk gets a candidate table (and nothing fails)
    assert bucket_candidates(bucket_records([records.tobytes()]), chunk_size=2) == {}


def test_split_by_puts_each_row_in_its_owners_part_and_keeps_empty_parts():
    # Given rows owned by parts 2, 0, 2 of four
    rows = np.array([7, 8, 9])
    owner = np.array([2, 0, 2], dtype=np.uint64)
    # When split, Then part 0 has row 8, part 2 rows 7 and 9 (in order), parts 1 and 3 none
    assert [part.tolist() for part in split_by(rows, owner, 4)] == [[8], [], [7, 9], []]


def test_partition_count_follows_the_records_per_bucket():
    params = LSHParams(bands=100, rows=4)
    assert partition_count(1_000, params, bucket_records=10_000) == 10
    assert partition_count(10, params, bucket_records=10_000) == 2  # never fewer than two


def test_verify_candidates_scores_exactly_and_skips_missing_documents():
    # Given three documents, one candidate pair of near duplicates, one unrelated pair,
    # and one pair whose second document is not loaded (position 9)
    texts = {
        0: "the quick brown fox jumps over the lazy dog",
        1: "the quick brown fox jumped over the lazy dog",
        2: "an entirely different sentence about cheese",
    }
    docs = [Document.from_text(p, t) for p, t in texts.items()]
    low, high = np.array([0, 0, 1]), np.array([1, 2, 9])
    # When they are verified at 0.8
    found = verify_candidates(low, high, docs, "ratio", 0.8)
    # Then only the near duplicates remain, with rapidfuzz's score
    assert found == [(0, 1, pytest.approx(fuzz.ratio(texts[0], texts[1])))]


def test_valid_documents_leave_out_what_is_not_text():
    # Given staged texts, one empty and one marked as not text
    items = [(0, "Some text."), (1, "   "), (2, {"not_text": "bytes"}), (3, "More text.")]
    # When the comparable documents are taken, Then only the texts remain, by position
    assert [d.position for d in valid_documents(items)] == [0, 3]
