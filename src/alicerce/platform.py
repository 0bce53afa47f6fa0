"""Alicerce: the one core API that the CLI and HTTP layers call.

Its parts live in `alicerce.core` by role, each layer building on the one before: the
home's state, the knowledge base, models, apps, answering, governance, tuning.
"""

from __future__ import annotations

from alicerce.core.knowledge import check_collection_name
from alicerce.core.tuning import Tuning

__all__ = ["Alicerce", "check_collection_name"]


class Alicerce(Tuning):
    """A home directory of collections: ingest documents, search them, answer from them,
    run chains, evaluate, govern what is served, tune models."""
