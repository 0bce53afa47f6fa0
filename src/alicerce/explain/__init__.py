"""Explanations of answers: context attribution by ablation (docs/responsible-ai.md)."""
