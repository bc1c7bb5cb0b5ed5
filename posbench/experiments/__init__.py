"""Experiments over many runs: named sizes (presets.py), `compare` with its verdicts, run grouping and
plots, and `bench` (training and evaluation speed)."""
