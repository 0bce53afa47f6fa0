"""Observability: traces and feedback, drift and skew of what apps are asked and answer."""
