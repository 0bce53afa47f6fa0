"""References to versioned things (apps, prompts) as users write them."""

from __future__ import annotations


def split_ref(ref: str) -> tuple[str, str]:
    """'app', 'app@3', 'app@staging' or 'app:staging' → (name, version-or-label or '')."""
    name, sep, at = ref.strip().partition("@")
    if not sep:
        name, _, at = name.partition(":")
    return name, at
