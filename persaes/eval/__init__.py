"""Evaluation: the benchmark protocol's splits and metrics, simulated users with known tastes."""
