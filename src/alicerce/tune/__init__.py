"""Tuning: training rows, PEFT/full training runs on CPU torch, run records (docs/tuning.md)."""
