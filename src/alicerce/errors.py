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
    └── StoreError             the store cannot be opened or is incompatible

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


class StoreError(AlicerceError):
    """The store cannot be opened, or was written by an incompatible version."""
