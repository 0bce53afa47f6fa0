"""Training rows for tuning: chat (`messages`) or prompt/completion JSONL, or raw text for
continued pre-training; read whole, checked row by row, versioned by content.

A bad row is an error that names its line and what to fix, never a row silently dropped:
a user who thinks they trained on 500 rows must have trained on 500 rows. The version is the
sha256 of the rows as parsed (not of the file's bytes), so reformatting a file keeps it.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alicerce.errors import InputError, NotFoundError
from alicerce.types import Message

MAX_ROWS = 200_000
MAX_ROW_CHARS = 100_000
SHOWN_ERRORS = 10
Kind = Literal["chat", "text"]


@dataclass(frozen=True)
class Example:
    """One training row: the conversation before the answer and the answer the model must
    learn to give (the loss is on its tokens only); for raw text, `prompt` is empty and the
    loss is on all of `answer`."""

    prompt: tuple[Message, ...]
    answer: str
    line: int


@dataclass(frozen=True)
class TuneData:
    examples: tuple[Example, ...]
    kind: Kind
    version: str  # sha256 of the parsed rows, 16 hex digits
    source: str

    def split(self, eval_split: float, seed: int) -> tuple[tuple[Example, ...],
                                                            tuple[Example, ...]]:
        """Train and validation rows, shuffled by `seed`; both must be non-empty."""
        n = len(self.examples)
        held = round(n * eval_split)
        if eval_split > 0 and (held < 1 or n - held < 1):
            raise InputError(
                f"{n} rows are too few for a validation split of {eval_split:g} "
                f"({held} validation row(s), {n - held} to train on)",
                hint="add rows, or raise --eval-split so at least one row is held out "
                     "(early stopping needs validation rows)")
        order = list(self.examples)
        random.Random(seed).shuffle(order)
        return tuple(order[held:]), tuple(order[:held])


def load(path: str | Path, kind: Kind = "chat") -> TuneData:
    """Rows from a JSONL file: `{"messages": [...]}` ending with the assistant's answer,
    `{"prompt": ..., "completion": ...}`, or (kind "text") `{"text": ...}`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise NotFoundError(f"training data {p} not found",
                            hint="give a .jsonl file; `alicerce tune data build` writes one")
    examples: list[Example] = []
    errors: list[str] = []
    with p.open(encoding="utf-8", errors="strict") as fh:
        try:
            for number, raw in enumerate(fh, start=1):
                if not raw.strip():
                    continue
                if len(examples) + len(errors) >= MAX_ROWS:
                    raise InputError(f"{p} has more than {MAX_ROWS} rows",
                                     hint="tune on a sample; a CPU cannot train on more")
                try:
                    examples.append(_row(raw, number, kind))
                except ValueError as exc:
                    errors.append(f"line {number}: {exc}")
        except UnicodeDecodeError as exc:
            raise InputError(f"{p} is not UTF-8 text ({exc.reason} at byte {exc.start})",
                             hint="save the file as UTF-8") from exc
    if errors:
        more = len(errors) - SHOWN_ERRORS
        raise InputError(f"{len(errors)} bad row(s) in {p}: " + "; ".join(errors[:SHOWN_ERRORS])
                         + (f"; and {more} more" if more > 0 else ""),
                         hint=_FORMATS[kind])
    if not examples:
        raise InputError(f"{p} has no rows", hint=_FORMATS[kind])
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([[m.role, m.content] for m in e.prompt] + [e.answer],
                                 ensure_ascii=False).encode())
    return TuneData(tuple(examples), kind, digest.hexdigest()[:16], str(p))


_FORMATS = {
    "chat": 'one JSON object per line: {"messages": [{"role": "user", "content": "..."}, '
            '{"role": "assistant", "content": "..."}]} or {"prompt": "...", "completion": '
            '"..."}',
    "text": 'one JSON object per line: {"text": "..."} (continued pre-training)',
}


def _row(raw: str, number: int, kind: Kind) -> Example:
    if len(raw) > MAX_ROW_CHARS:
        raise ValueError(f"row is {len(raw)} characters (at most {MAX_ROW_CHARS})")
    try:
        obj: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from exc
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if obj.get("review") == "pending":
        raise ValueError("a synthetic row nobody has reviewed yet: `alicerce tune data review "
                         "FILE` accepts, corrects or rejects it")
    if kind == "text":
        text = obj.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError('needs a non-empty "text"')
        return Example((), text, number)
    if "messages" in obj:
        return _chat(obj["messages"], number)
    prompt, completion = obj.get("prompt"), obj.get("completion")
    if isinstance(prompt, str) and isinstance(completion, str):
        if not prompt.strip() or not completion.strip():
            raise ValueError('"prompt" and "completion" must not be empty')
        return Example((Message("user", prompt),), completion, number)
    raise ValueError('needs "messages", or "prompt" and "completion" as strings')


def _chat(messages: Any, number: int) -> Example:
    if not isinstance(messages, list) or len(messages) < 2:
        raise ValueError('"messages" must be a list of at least a user and an assistant '
                         "message")
    out: list[Message] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i + 1} needs a role (system, user or assistant) and "
                             "a string content")
        out.append(Message(m["role"], m["content"]))
    if out[-1].role != "assistant" or not out[-1].content.strip():
        raise ValueError("the last message must be the assistant's answer, not empty "
                         "(the answer the model learns)")
    if not any(m.role == "user" for m in out[:-1]):
        raise ValueError("no user message before the answer")
    return Example(tuple(out[:-1]), out[-1].content, number)
