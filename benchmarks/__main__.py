"""`python -m benchmarks` (`make bench`): every benchmark, results in benchmarks/results/."""

from __future__ import annotations

import sys

from benchmarks import neardup

if __name__ == "__main__":
    sys.exit(neardup.main(sys.argv[1:]))
