"""Seeded, reproducible benchmarks that compare methods side by side in one run."""
