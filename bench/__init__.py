"""Benchmarks, one command per scenario (`irq bench …`); each prints a table and writes a JSON file and
a PNG plot of its latency distribution. docs/benchmarks.md holds the latest figures and the commands."""
