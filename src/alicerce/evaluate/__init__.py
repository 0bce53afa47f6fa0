"""Evaluation: datasets and metrics."""
