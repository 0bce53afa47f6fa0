"""Batch jobs: a chain app over a file, resumable (docs/chains.md)."""
