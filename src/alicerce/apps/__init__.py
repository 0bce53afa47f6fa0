"""Deployable assistants: a versioned spec binds collections, retrieval, prompt, model
and chain under one name that labels point at."""
