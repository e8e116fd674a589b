"""Concord benchmarks: HTTP issue throughput and reserve latency against same-run baselines.

Run with ``make bench`` (``python -m bench``); ``--quick`` for a short smoke run.
"""
