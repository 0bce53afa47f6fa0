"""Alicerce: the one core API that the CLI and HTTP layers call.

Its parts live in `alicerce.core` by role, each layer building on the one before: the
home's state, the knowledge base, models, apps, answering, governance.
"""

from __future__ import annotations

from alicerce.core.governance import Governance
from alicerce.core.knowledge import check_collection_name

__all__ = ["Alicerce", "check_collection_name"]


class Alicerce(Governance):
    """A home directory of collections: ingest documents, search them, answer from them,
    run chains, evaluate, govern what is served."""
