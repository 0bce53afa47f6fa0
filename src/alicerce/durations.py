"""Durations as users write them ('30m', '24h', '7d'), for windows and retention."""

from __future__ import annotations

from alicerce.errors import InputError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: str, what: str = "--since") -> float:
    """'90s', '15m', '1h', '7d' (or plain seconds) → seconds; `what` names the option in
    the error."""
    try:
        value = float(text[:-1]) * UNITS[text[-1]] if text[-1:] in UNITS else float(text)
    except (ValueError, IndexError):
        raise InputError(f"cannot read {what} {text!r}", hint="e.g. 30m, 24h, 7d") from None
    if value <= 0:
        raise InputError(f"{what} must be positive, got {text!r}", hint="e.g. 24h")
    return value
