"""Near-duplicate search benchmark: all-pairs vs exact vs indexed vs datasketch.

    python -m benchmarks.neardup                       # 1k, 5k, 20k, 100k + Debian texts
    python -m benchmarks.neardup --sizes 1000,5000     # a quick run

Writes ``benchmarks/results/neardup.json`` and a plot of time vs corpus size
(``benchmarks/results/neardup.png``); prints a Markdown table. Every method runs in a
forked child so its peak memory (max RSS, which includes the corpus the parent holds)
is its own. Ratios compare methods of the same run, on the same corpus.

* all-pairs: ``find_pairs`` (rapidfuzz ``process.cdist``, both cores), the brute force.
  Measured in full up to ``--allpairs-full-max`` documents; above that, measured on a
  seeded sample of rows against every document (about ``--allpairs-sample-pairs``
  pairs) and scaled by the pair count, up to ``--allpairs-max``; beyond, extrapolated
  from the largest such figure by n^2.
* exact / indexed: ``exact_pairs`` / ``indexed_pairs`` of ``redundancy.core.bounds`` / ``.lsh``.
* datasketch: ``MinHashLSH`` candidates verified with rapidfuzz (so precision is 1.0
  too), at its common settings (word 5-shingles, threshold 0.8, 128 permutations) and at
  settings that match indexed mode's recall (``DATASKETCH_MATCHED``).

Recall is measured against exact mode (which equals all-pairs: checked here whenever
both run, and by the test suite). Above ``--exact-max`` exact mode is not run and recall
is estimated on the pairs of ``--recall-sample`` random documents, found exactly against
the whole corpus.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS
from benchmarks.corpora import debian_corpus, synthetic_corpus
from redundancy.core import normalise
from redundancy.core.bounds import exact_pairs
from redundancy.core.lsh import LSHParams, indexed_pairs, unique_pairs
from redundancy.core.pairs import find_pairs

THRESHOLD = 0.8
DATASKETCH_COMMON = {"shingles": "word5", "threshold": 0.8, "num_perm": 128}
DATASKETCH_MATCHED = {"shingles": "char5", "threshold": 0.5, "num_perm": 128}
"""The cheapest datasketch settings tried (char 5-shingles; thresholds 0.8, 0.5, 0.4, 0.3;
128 or 256 permutations) that reach indexed mode's recall on the 5,000-document corpus."""

Pairs = tuple[np.ndarray, np.ndarray]


# -- methods: each returns (a, b) arrays of the pairs found, a < b -------------------------


def run_allpairs(texts: list[str]) -> Pairs:
    from rapidfuzz import fuzz

    found = find_pairs(texts, scorer=fuzz.ratio, threshold=THRESHOLD, workers=-1)
    return found.left, found.right


def run_allpairs_sample(texts: list[str], rows: int, seed: int = 0) -> Pairs:
    from rapidfuzz import fuzz

    chosen = sorted(random.Random(seed).sample(range(len(texts)), rows))
    find_pairs(
        [texts[i] for i in chosen], texts, scorer=fuzz.ratio, threshold=THRESHOLD, workers=-1
    )
    return np.empty(0, np.int64), np.empty(0, np.int64)


def run_exact(texts: list[str]) -> Pairs:
    found = exact_pairs(texts, algorithm="ratio", threshold=THRESHOLD, workers=-1)
    return found.left, found.right


def run_indexed(texts: list[str]) -> Pairs:
    found = indexed_pairs(texts, algorithm="ratio", threshold=THRESHOLD, workers=-1)
    return found.left, found.right


def run_datasketch(texts: list[str], shingles: str, threshold: float, num_perm: int) -> Pairs:
    """MinHashLSH candidates (insert all, query each), verified with rapidfuzz."""
    from datasketch import MinHash, MinHashLSH
    from rapidfuzz import fuzz, process

    def grams(text: str) -> list[bytes]:
        if shingles == "char5":
            return [text[i : i + 5].encode() for i in range(max(1, len(text) - 4))]
        words = text.split()
        return [" ".join(words[i : i + 5]).encode() for i in range(max(1, len(words) - 4))]

    hashes = MinHash.bulk((grams(t) for t in texts), num_perm=num_perm)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    with lsh.insertion_session() as session:
        for i, m in enumerate(hashes):
            session.insert(i, m)
    lo: list[int] = []
    hi: list[int] = []
    for i, m in enumerate(hashes):
        for j in lsh.query(m):
            if j > i:
                lo.append(i)
                hi.append(j)
    a, b = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
    arr = np.asarray(texts, dtype=object)
    scores = process.cpdist(
        arr[a], arr[b], scorer=fuzz.ratio, processor=None, dtype=np.float64, workers=-1
    )
    keep = scores / 100.0 >= THRESHOLD
    return a[keep], b[keep]


def sampled_reference(texts: list[str], sample: int, seed: int = 0) -> tuple[Pairs, list[int]]:
    """Exact pairs of ``sample`` random documents against all (for recall at scale)."""
    chosen = sorted(random.Random(seed).sample(range(len(texts)), sample))
    found = exact_pairs(
        [texts[i] for i in chosen], texts, algorithm="ratio", threshold=THRESHOLD, workers=-1
    )
    a = np.asarray(chosen, np.int64)[found.left]
    b = found.right
    keep = a != b
    lo, hi = unique_pairs(np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep]))
    return (lo, hi), chosen


# -- running each method in a child for its own peak memory -------------------------------


def measure(fn: Callable[[], Pairs]) -> dict[str, Any]:
    """Run ``fn`` in a forked child: seconds, pairs, and the child's peak RSS (MiB)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.npz"
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                started = time.perf_counter()
                a, b = fn()
                seconds = time.perf_counter() - started
                np.savez(out, a=a, b=b, seconds=seconds)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        _, status, usage = os.wait4(pid, 0)
        if status != 0:
            raise RuntimeError("benchmark child failed")
        data = np.load(out)
        return {
            "seconds": float(data["seconds"]),
            "pairs": (data["a"], data["b"]),
            "peak_rss_mib": usage.ru_maxrss / 1024,
        }


def rss_mib() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss / 2**20)


def recall_precision(
    found: Pairs, reference: Pairs, sample: list[int] | None = None
) -> dict[str, Any]:
    got = set(zip(found[0].tolist(), found[1].tolist(), strict=True))
    ref = set(zip(reference[0].tolist(), reference[1].tolist(), strict=True))
    if sample is not None:  # only pairs touching the sampled documents can be judged
        keep = set(sample)
        got_s = {p for p in got if p[0] in keep or p[1] in keep}
        return {"recall": len(got_s & ref) / max(1, len(ref)), "recall_sampled": True}
    out = {"recall": len(got & ref) / max(1, len(ref))}
    out["precision"] = len(got & ref) / max(1, len(got))
    return out


# -- the benchmark --------------------------------------------------------------------


def bench_corpus(
    name: str, texts: list[str], args: argparse.Namespace, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    n = len(texts)
    runs: list[dict[str, Any]] = []
    base = rss_mib()

    def record(method: str, result: dict[str, Any], **extra: Any) -> dict[str, Any]:
        row = {
            "corpus": name,
            "documents": n,
            "method": method,
            "seconds": round(result["seconds"], 3),
            "peak_rss_mib": round(result["peak_rss_mib"], 1),
            "corpus_rss_mib": round(base, 1),
            **extra,
        }
        if "pairs" in result:
            row["pairs"] = int(result["pairs"][0].size)
        runs.append(row)
        details = " ".join(f"{k}={v}" for k, v in extra.items())
        log(
            f"{name:>12} n={n:>7,} {method:<22} {row['seconds']:>9.2f} s  "
            f"peak {row['peak_rss_mib']:>7.0f} MiB  {details}"
        )
        return row

    # all-pairs
    allpairs_seconds: float | None = None
    brute: Pairs | None = None
    if n <= args.allpairs_full_max:
        res = measure(lambda: run_allpairs(texts))
        brute = res["pairs"]
        allpairs_seconds = res["seconds"]
        record("all-pairs", res, how="measured")
    elif n <= args.allpairs_max:
        rows = max(1, min(n, math.ceil(args.allpairs_sample_pairs / n)))
        res = measure(lambda: run_allpairs_sample(texts, rows))
        scale = (n * (n - 1) / 2) / (rows * n)
        allpairs_seconds = res["seconds"] * scale
        res = {**res, "seconds": allpairs_seconds}
        del res["pairs"]
        record("all-pairs", res, how=f"{rows} sampled rows x all, scaled by pair count")
    else:
        largest = max((r for r in args.allpairs_seen), default=None)
        if largest:
            m, secs = largest
            allpairs_seconds = secs * (n * (n - 1)) / (m * (m - 1))
            runs.append(
                {
                    "corpus": name,
                    "documents": n,
                    "method": "all-pairs",
                    "seconds": round(allpairs_seconds, 1),
                    "how": f"extrapolated by n^2 from {m:,} documents",
                }
            )
            log(f"{name:>12} n={n:>7,} all-pairs (extrapolated) {allpairs_seconds:,.0f} s")
    if allpairs_seconds is not None and name == "synthetic" and n <= args.allpairs_max:
        args.allpairs_seen.append((n, allpairs_seconds))

    # exact: the reference for recall
    reference: Pairs | None = brute
    sample: list[int] | None = None
    if n <= args.exact_max:
        res = measure(lambda: run_exact(texts))
        extra: dict[str, Any] = {}
        if brute is not None:
            same = set(zip(*(x.tolist() for x in res["pairs"]), strict=True)) == set(
                zip(*(x.tolist() for x in brute), strict=True)
            )
            extra["equals_all_pairs"] = same
        if allpairs_seconds:
            extra["speedup_vs_all_pairs"] = round(allpairs_seconds / res["seconds"], 1)
        record("exact", res, **extra)
        reference = res["pairs"]
    else:
        started = time.perf_counter()
        reference, sample = sampled_reference(texts, args.recall_sample)
        log(
            f"{name:>12} recall reference: {args.recall_sample} sampled documents, "
            f"{reference[0].size} pairs, {time.perf_counter() - started:.0f} s"
        )

    def compared(res: dict[str, Any]) -> dict[str, Any]:
        extra = recall_precision(res["pairs"], reference, sample) if reference is not None else {}
        extra = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in extra.items()}
        if allpairs_seconds:
            extra["speedup_vs_all_pairs"] = round(allpairs_seconds / res["seconds"], 1)
        return extra

    params = LSHParams.for_threshold(THRESHOLD, n)
    res = measure(lambda: run_indexed(texts))
    record("indexed", res, lsh=f"b={params.bands} r={params.rows}", **compared(res))
    indexed_seconds = res["seconds"]

    if n <= args.datasketch_max and not args.no_datasketch:
        for label, settings in (
            ("datasketch common", DATASKETCH_COMMON),
            ("datasketch matched", DATASKETCH_MATCHED),
        ):
            res = measure(lambda s=settings: run_datasketch(texts, **s))
            extra = compared(res)
            extra["indexed_speedup"] = round(res["seconds"] / indexed_seconds, 1)
            record(label, res, settings=settings, **extra)
    return runs


def markdown(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| corpus | documents | method | time (s) | vs all-pairs | recall | peak RSS (MiB) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        recall = r.get("recall")
        shown = "" if recall is None else f"{recall:.4f}"
        if recall is not None and r.get("recall_sampled"):
            shown += " (sampled)"
        if r["method"] == "exact" and r.get("equals_all_pairs"):
            shown = "1 (= all-pairs)"
        elif r["method"] == "exact":
            shown = "1 (reference)"
        estimated = r["method"] == "all-pairs" and "measured" not in r.get("how", "")
        time_s = f"{r['seconds']:,.1f}" + (" (est.)" if estimated else "")
        speed = r.get("speedup_vs_all_pairs")
        lines.append(
            f"| {r['corpus']} | {r['documents']:,} | {r['method']} | {time_s} | "
            f"{'' if speed is None else f'{speed}x'} | {shown} | "
            f"{r.get('peak_rss_mib', '')} |"
        )
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    styles = {
        "all-pairs": ("black", "o"),
        "exact": ("tab:blue", "s"),
        "indexed": ("tab:green", "^"),
        "datasketch common": ("tab:orange", "v"),
        "datasketch matched": ("tab:red", "D"),
    }
    for method, (color, marker) in styles.items():
        pts = sorted(
            (r["documents"], r["seconds"], r.get("how", "measured"))
            for r in runs
            if r["corpus"] == "synthetic" and r["method"] == method
        )
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        recalls = [
            r["recall"]
            for r in runs
            if r["corpus"] == "synthetic" and r["method"] == method and "recall" in r
        ]
        label = method if not recalls else f"{method} (recall {min(recalls):.2f})"
        ax.plot(xs, ys, color=color, marker=marker, label=label, linewidth=1.5)
        est = [(x, y) for x, y, how in pts if "measured" not in how]
        if est:
            ax.scatter(
                [e[0] for e in est],
                [e[1] for e in est],
                facecolors="white",
                edgecolors=color,
                marker=marker,
                s=60,
                zorder=3,
                label=f"{method} (estimated)",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("documents (synthetic, ~1,500 characters, 10% edited copies)")
    ax.set_ylabel("seconds (2 cores)")
    ax.set_title(f"Near-duplicate search at ratio >= {THRESHOLD}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,5000,20000,100000")
    parser.add_argument(
        "--real",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the Debian licence/copyright paragraphs",
    )
    parser.add_argument("--allpairs-full-max", type=int, default=2000)
    parser.add_argument("--allpairs-max", type=int, default=20000)
    parser.add_argument("--allpairs-sample-pairs", type=int, default=4_000_000)
    parser.add_argument("--exact-max", type=int, default=20000)
    parser.add_argument("--datasketch-max", type=int, default=20000)
    parser.add_argument("--no-datasketch", action="store_true")
    parser.add_argument("--recall-sample", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS / "neardup.json")
    parser.add_argument("--plot", type=Path, default=RESULTS / "neardup.png")
    parser.add_argument(
        "--replot",
        type=Path,
        default=None,
        help="only redraw the plot and table from this results JSON",
    )
    args = parser.parse_args(argv)
    if args.replot:
        runs = json.loads(args.replot.read_text())["runs"]
        plot(runs, args.plot)
        print(markdown(runs))
        return 0
    args.allpairs_seen = []
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.time()
    load_before = os.getloadavg()
    runs: list[dict[str, Any]] = []
    for n in (int(s) for s in args.sizes.split(",") if s):
        corpus = synthetic_corpus(n, seed=n, copy_share=0.1, edit_share=0.05)
        texts = sorted({normalise(t) for t in corpus.texts})
        runs += bench_corpus("synthetic", texts, args, log)
        del corpus, texts
    if args.real:
        real = debian_corpus(paragraphs=True, min_chars=50, max_chars=20000)
        if real.texts:
            texts = sorted({normalise(t) for t in real.texts})
            runs += bench_corpus("debian", texts, args, log)
        else:
            log("no Debian licence texts on this machine: real corpus skipped")
    import datasketch
    import rapidfuzz

    report = {
        "benchmark": "near-duplicate search",
        "threshold": THRESHOLD,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(time.time() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "rapidfuzz": rapidfuzz.__version__,
            "datasketch": getattr(datasketch, "__version__", "?"),
        },
        "argv": sys.argv[1:],
        "runs": runs,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(runs, args.plot)
    print(markdown(runs))
    log(f"wrote {args.out} and {args.plot} in {report['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
