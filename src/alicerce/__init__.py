"""Alicerce: a self-hosted, offline platform for RAG assistants over your own documents."""

from alicerce.config import Settings
from alicerce.errors import AlicerceError
from alicerce.platform import Alicerce
from alicerce.version import __version__

__all__ = ["Alicerce", "AlicerceError", "Settings", "__version__"]
