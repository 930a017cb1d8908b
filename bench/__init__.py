"""Benchmarks (not tests): each writes JSON results to ``bench/results/``."""
