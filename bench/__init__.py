"""Benchmarks: scripts that print a table against a named baseline (run_all.py runs them all)."""
