"""One error tree for Alicerce; every message says what was wrong and how to fix it.

    AlicerceError
    ├── ConfigError            bad setting value or settings file
    ├── InputError             bad argument from a caller (query, filter, decoding
    │                          parameter, template variable, dataset)
    │   └── NotFoundError      a named thing (collection, model, prompt) does not exist
    ├── IngestError            one file or record could not be loaded (reported, not raised,
    │                          by ingestion: the run goes on with the other files)
    ├── EmbedderError          the embedding backend failed or is not installed
    ├── GeneratorError         the LLM backend failed, or its model file is missing or corrupt
    │   └── JudgeError         a judge gave no usable verdict for one row (recorded on the
    │                          row; the evaluation run goes on)
    ├── StoreError             the store cannot be opened or is incompatible
    │   └── StoreUnavailableError  the database server cannot be reached (HTTP 503; try
    │                          again when it is back)
    ├── ChainError             a chain's step failed at run time (a transform raised, a
    │                          value had the wrong shape); the message names the step
    ├── AccessError            missing, invalid or revoked API key (HTTP 401)
    │   └── ForbiddenError     the key lacks the scope or the collection (HTTP 403)
    └── BusyError              try again after `retry_after` seconds
        ├── RateLimitError     the key's requests or tokens per minute are spent (HTTP 429)
        └── OverloadedError    the work queue is full (HTTP 503)

Callers that only want to tell "the user did something wrong" from "something broke" catch
InputError / ConfigError versus the rest.
"""

from __future__ import annotations


class AlicerceError(Exception):
    """Base of every error Alicerce raises on purpose."""

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class ConfigError(AlicerceError):
    """A setting has a bad value; the message names the setting and where it came from."""


class InputError(AlicerceError):
    """An argument from the caller is invalid."""


class NotFoundError(InputError):
    """A named collection, document or dataset does not exist."""


class IngestError(AlicerceError):
    """A file or record could not be turned into a document."""


class EmbedderError(AlicerceError):
    """The embedding backend is missing, misconfigured or failed."""


class GeneratorError(AlicerceError):
    """The generation backend is missing, its model cannot be loaded, or a call failed."""


class JudgeError(GeneratorError):
    """A judge gave no usable verdict (a cut-off reply, a timeout) for one row."""


class StoreError(AlicerceError):
    """The store cannot be opened, or was written by an incompatible version."""


class StoreUnavailableError(StoreError):
    """The database server is down or unreachable; the request may be retried later."""

    retry_after = 5.0


class ChainError(AlicerceError):
    """A step of a chain failed in a way that is neither bad input nor a backend's fault."""


class AccessError(AlicerceError):
    """The caller did not present a valid API key."""


class ForbiddenError(AccessError):
    """The key is valid but may not do this (scope) or see this (collection)."""


class BusyError(AlicerceError):
    """Refused for now; `retry_after` says when trying again makes sense."""

    def __init__(self, message: str, hint: str = "", retry_after: float = 1.0) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after


class RateLimitError(BusyError):
    """A per-key limit (requests or tokens per minute) is reached."""


class OverloadedError(BusyError):
    """The server's bounded work queue is full."""
