"""Measuring helpers that rails, monitoring and evaluation all use (judges, grounding), kept
below `evaluate/` so that the packages that use them never import the evaluation
workflow."""
