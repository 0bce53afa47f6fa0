"""Observability: traces and feedback (metrics and drift join them later)."""
