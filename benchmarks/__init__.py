"""Benchmarks: quality (Vid4), latency and pipeline timing."""
