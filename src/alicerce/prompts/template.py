"""Prompt templates: sandboxed Jinja2 whose variables are known before any model call.

A template is a user message and an optional system message. Its variables are read from
the templates themselves (Jinja's AST), so "declared" always matches what is used; rendering
with a variable missing, or with one the template does not use, is an InputError that names
both lists. The sandbox blocks attribute tricks (`__class__`, ...), so a template from a
user cannot reach Python internals.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from alicerce.errors import InputError
from alicerce.types import Message

_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                     keep_trailing_newline=False, trim_blocks=True,
                                     lstrip_blocks=True)


@lru_cache(maxsize=512)
def _compiled(source: str) -> Template:
    """Parsing and compiling a template costs about a millisecond; rendering, microseconds."""
    return _ENV.from_string(source)


@lru_cache(maxsize=512)
def _variables(*sources: str) -> tuple[str, ...]:
    found: set[str] = set()
    for src in sources:
        found |= meta.find_undeclared_variables(_ENV.parse(src))
    return tuple(sorted(found))


@dataclass(frozen=True)
class PromptTemplate:
    """One immutable prompt version; `hash` (content) is its identity."""

    name: str
    template: str
    system: str = ""
    description: str = ""
    version: int = 0
    labels: tuple[str, ...] = ()
    created_at: str = ""

    def __post_init__(self) -> None:
        if not self.template.strip():
            raise InputError(f"prompt {self.name!r} has an empty template",
                             hint="write the user message, e.g. 'Pergunta: {{ question }}'")
        for part, src in (("template", self.template), ("system", self.system)):
            try:
                _ENV.parse(src)
            except TemplateSyntaxError as exc:
                raise InputError(f"prompt {self.name!r}: {part} line {exc.lineno}: {exc.message}",
                                 hint="fix the Jinja2 syntax ({{ var }}, {% if %}...{% endif %})"
                                 ) from None

    @property
    def hash(self) -> str:
        blob = json.dumps({"template": self.template, "system": self.system}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def variables(self) -> tuple[str, ...]:
        return _variables(self.template, self.system)

    def check(self, values: dict[str, Any]) -> None:
        want = set(self.variables)
        missing, unknown = sorted(want - set(values)), sorted(set(values) - want)
        if missing or unknown:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unknown {', '.join(unknown)}"] if unknown else [])
            raise InputError(f"prompt {self.ref}: {'; '.join(parts)} variable(s)",
                             hint="it declares: " + (", ".join(sorted(want)) or "nothing"))

    def render(self, **values: Any) -> list[Message]:
        """System (when there is one) and user messages, ready for a Generator."""
        self.check(values)
        try:
            user = _compiled(self.template).render(**values).strip()
            system = _compiled(self.system).render(**values).strip()
        except (UndefinedError, SecurityError, TypeError) as exc:
            raise InputError(f"prompt {self.ref} could not be rendered: {exc}",
                             hint="check the values passed to its variables") from None
        return ([Message("system", system)] if system else []) + [Message("user", user)]
