"""Benchmarks B1..B7: every stage measured side by side with its peer in one run.

Modules: figures (a figure and the report), workspace (scratch dirs and the bench
config), table (the pinned bench table a rank reads), ingest (B1), read (B2),
ranks + distributed (B3, B4), infer (B5), memory + rss_worker (B6), tracking (B7),
run (the whole run). `jobs/bench.py` is a thin wrapper around `run.run_bench`.
"""
