"""Core near-duplicate search: our overhead against plain rapidfuzz, and the gain over the
original service's difflib approach.

    python -m benchmarks.core_neardup [--docs 2000] [--difflib-pairs 300]

Baselines, same inputs, same run:
* plain ``process.cdist(norm, norm, scorer=fuzz.ratio, workers=-1)`` -- one float32 n x n
  matrix, no thresholding, no pair list (what our chunked search is built on);
* the same with our pre-filter settings (``score_cutoff``, ``dtype=uint8``) but no
  blocking, no exact rescoring and no pair list: the tightest measure of our overhead;
* ``difflib.SequenceMatcher(None, a, b).ratio()`` on a random sample of pairs.
"""

from __future__ import annotations

import argparse
import difflib
import random

from rapidfuzz import fuzz, process

from benchmarks.common import timed, write_result
from benchmarks.corpora import debian_corpus
from redundancy.core import near_duplicates, normalise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--difflib-pairs", type=int, default=300)
    parser.add_argument("--threshold", type=float, default=0.8)
    args = parser.parse_args()

    docs = debian_corpus(paragraphs=True, min_chars=200, max_chars=3000, limit=args.docs).texts
    if len(docs) < args.docs:
        raise SystemExit(f"only {len(docs)} real paragraphs found (Debian licence texts)")
    pairs_total = len(docs) * (len(docs) - 1) // 2

    ours_s, result = timed(lambda: near_duplicates(docs, args.threshold, workers=-1), repeat=2)
    # the chunked brute-force path alone (mode all-pairs): our overhead over rapidfuzz
    allpairs_s, _ = timed(
        lambda: near_duplicates(docs, args.threshold, mode="all-pairs", workers=-1), repeat=2
    )
    norm = [normalise(d) for d in docs]
    plain_s, _ = timed(
        lambda: process.cdist(norm, norm, scorer=fuzz.ratio, processor=None, workers=-1), repeat=2
    )

    import numpy as np

    from redundancy.core.pairs import uint8_cutoff

    tuned_s, _ = timed(
        lambda: process.cdist(
            norm,
            norm,
            scorer=fuzz.ratio,
            processor=None,
            workers=-1,
            score_cutoff=uint8_cutoff(args.threshold),
            dtype=np.uint8,
        ),
        repeat=2,
    )
    # Overhead alone: the same search on distinct texts only, so grouping identical texts
    # (which the plain baselines lack) gives us no head start.
    distinct = list(dict.fromkeys(norm))
    distinct_ours_s, _ = timed(
        lambda: near_duplicates(distinct, args.threshold, mode="all-pairs", workers=-1), repeat=2
    )
    distinct_tuned_s, _ = timed(
        lambda: process.cdist(
            distinct,
            distinct,
            scorer=fuzz.ratio,
            processor=None,
            workers=-1,
            score_cutoff=uint8_cutoff(args.threshold),
            dtype=np.uint8,
        ),
        repeat=2,
    )
    rng = random.Random(1)
    sample = [tuple(rng.sample(range(len(norm)), 2)) for _ in range(args.difflib_pairs)]
    difflib_s, _ = timed(
        lambda: [difflib.SequenceMatcher(None, norm[a], norm[b]).ratio() for a, b in sample]
    )
    rf_sample_s, _ = timed(
        lambda: process.cpdist(
            [norm[a] for a, _ in sample],
            [norm[b] for _, b in sample],
            scorer=fuzz.ratio,
            processor=None,
            workers=1,
        )
    )
    ours_rate = pairs_total / ours_s
    difflib_rate = len(sample) / difflib_s
    write_result(
        "core_neardup",
        {
            "documents": len(docs),
            "mean_chars": sum(map(len, docs)) / len(docs),
            "corpus": "paragraphs of /usr/share/doc/*/copyright and /usr/share/common-licenses",
            "threshold": args.threshold,
            "pairs_compared": pairs_total,
            "pairs_found": len(result.pairs),
            "distinct_texts": result.unique_count,
            "ours": {"mode": result.mode, "seconds": ours_s, "pairs_per_s": ours_rate},
            "ours_all_pairs_mode": {"seconds": allpairs_s, "pairs_per_s": pairs_total / allpairs_s},
            "plain_cdist": {"seconds": plain_s, "pairs_per_s": pairs_total / plain_s},
            "tuned_cdist": {"seconds": tuned_s, "pairs_per_s": pairs_total / tuned_s},
            "difflib_sample": {
                "pairs": len(sample),
                "seconds": difflib_s,
                "pairs_per_s": difflib_rate,
            },
            "rapidfuzz_same_sample_1_thread": {
                "seconds": rf_sample_s,
                "pairs_per_s": len(sample) / rf_sample_s,
            },
            "ratio_vs_plain_cdist": plain_s / ours_s,
            "ratio_vs_tuned_cdist": tuned_s / ours_s,
            "all_pairs_mode_ratio_vs_plain_cdist": plain_s / allpairs_s,
            "all_pairs_mode_ratio_vs_tuned_cdist": tuned_s / allpairs_s,
            "speedup_vs_difflib": ours_rate / difflib_rate,
            "overhead_check_on_distinct_texts": {
                "texts": len(distinct),
                "all_pairs_mode_seconds": distinct_ours_s,
                "tuned_cdist_seconds": distinct_tuned_s,
                "ratio_vs_tuned_cdist": distinct_tuned_s / distinct_ours_s,
            },
        },
    )


if __name__ == "__main__":
    main()
