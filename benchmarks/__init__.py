"""Benchmarks: `python -m benchmarks` writes JSON to benchmarks/results/."""
