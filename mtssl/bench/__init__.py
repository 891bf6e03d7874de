"""The benchmark harness: a grid of runs under one protocol, and the tables, statistics and plots."""
