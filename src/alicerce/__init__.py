"""Alicerce: a self-hosted, offline platform for RAG assistants over your own documents."""

__version__ = "0.1.0"  # set before the imports below: platform records it in trace lineage

from alicerce.config import Settings
from alicerce.errors import AlicerceError
from alicerce.platform import Alicerce

__all__ = ["Alicerce", "AlicerceError", "Settings", "__version__"]
