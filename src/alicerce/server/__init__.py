"""HTTP serving: the FastAPI app factory, OpenAI-compatible and native routes, the chat page."""

from alicerce.server.app import check_bind, create_app

__all__ = ["check_bind", "create_app"]
