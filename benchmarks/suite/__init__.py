"""Side-by-side benchmarks of Graft, etcd and PySyncObj under one load generator (issue 8).

Run with `make bench` (or `python -m benchmarks --help`). See docs/benchmarks.md.
"""
