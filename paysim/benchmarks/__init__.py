"""Benchmarks (not tests): measured figures live here, never in timed unit tests."""
