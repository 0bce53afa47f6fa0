"""Prompt templates, the versioned registry, and the prompts Alicerce ships."""
