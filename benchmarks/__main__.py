"""Run every benchmark in turn: ``python -m benchmarks [name ...]``.

Each one is a module with a ``main()`` that writes ``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import subprocess
import sys

BENCHMARKS = [
    "core_neardup",   # near-duplicate search vs plain rapidfuzz cdist and vs difflib
    "e2e_tasks",      # analyze_content tasks/s vs a no-op task on a real Redis broker
    "batch_memory",   # peak memory of `crd batch` over 10,000 documents, embedded default
    "observability",  # tasks/s with metrics + tracing + JSON logs on vs off
]


def main() -> None:
    chosen = sys.argv[1:] or BENCHMARKS
    failed = [name for name in chosen
              if subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], check=False).returncode]
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
