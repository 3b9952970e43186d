"""Reproducible benchmarks. Each writes JSON to benchmarks/results/ and compares with a
baseline measured in the same run (figures are ratios; absolute numbers vary by machine)."""
