"""``python -m benchmarks [name ...]`` (``make bench``): run benchmarks in turn.

Each benchmark is a module with a ``main()`` (``python -m benchmarks.<name> --help``) that
measures its contender against a baseline in the same run and writes JSON to
``benchmarks/results/<name>.json``. Without names, every benchmark module here runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUPPORT = {"common", "corpora", "noop_tasks", "plain_celery"}
"""Modules here that are helpers, not benchmarks."""


def main() -> int:
    names = sys.argv[1:] or sorted(
        p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_") and p.stem not in SUPPORT
    )
    failed = []
    for name in names:
        print(f"== benchmarks.{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], check=False).returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
