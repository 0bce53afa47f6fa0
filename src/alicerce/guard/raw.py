"""The default rails around raw-model requests (a model called without an app).

Without them a raw model repeats a CPF back and obeys an injection that the app behind the
same server blocks. The input rails run on every user message (redactions replace the text
the model sees); the output rails run on each candidate, and on a stream a sentence at a time.
Rails that judge an answer against retrieved sources or an app's system prompt (grounding,
canary) have nothing to judge here, and the injection rail is left out by default: a raw
model's caller writes the instructions, and the head (trained to tell questions from
attempts to override an app's prompt) scores plain instructions as injections ("Say hello."
0.92, "Translate to English: bom dia" 0.98; 7 of 9 benign instructions measured would be
refused). The setting `raw_model_guards` names the rails explicitly, injection included.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from alicerce.guard.base import REFUSE, Context
from alicerce.guard.config import Guards
from alicerce.guard.rails import Outcome, Rails
from alicerce.guard.watch import Release, StreamWatch
from alicerce.language import detect
from alicerce.types import Delta, Message

# No sources or app prompt to judge against (grounding, canary); the caller writes the
# instructions (injection) and prompts of any length (size: an agent framework's system
# prompt and tool results pass 2,000 characters; the model's window bounds a request).
LEFT_OUT = ("grounding", "canary", "injection", "size")


def raw_guards(guards: Guards) -> Guards:
    """The settings' rails as they apply to a raw model by default."""
    return Guards(Rails("input", [r for r in guards.input.rails
                                  if r.guard.name not in LEFT_OUT]),
                  Rails("context"),
                  Rails("output", [r for r in guards.output.rails
                                   if r.guard.name not in LEFT_OUT]))


@dataclass
class RawCheck:
    """What the rails made of one raw request: the messages to send, the verdicts, and the
    rail that blocked (empty when none did)."""

    messages: list[Message]
    language: str
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    blocked: str = ""

    @property
    def refusal(self) -> str:
        return REFUSE[self.language]


def check_input(guards: Guards, messages: Sequence[Message]) -> RawCheck:
    """Input rails on each user message; redacted text replaces it."""
    last = next((m.content for m in reversed(messages) if m.role == "user"), "")
    check = RawCheck(list(messages), "pt" if detect(last) == "pt" else "en")
    for i, m in enumerate(messages):
        if m.role != "user" or not guards.input:
            continue
        out = guards.input.run(m.content, Context(question=m.content,
                                                  language=check.language))
        _note(check, out, "input")
        check.messages[i] = replace(m, content=out.text)  # redacted even when blocked
        if check.blocked:
            return check
    return check


def check_output(guards: Guards, check: RawCheck, text: str) -> tuple[str, bool]:
    """(the candidate as it may be shown, whether a rail blocked it): redacted, or the
    refusal on a block."""
    if not guards.output:
        return text, False
    out = guards.output.run(text, _ctx(check))
    _note(check, out, "output")
    return (check.refusal, True) if out.blocked is not None else (out.text, False)


def watch_stream(guards: Guards, check: RawCheck, deltas: Iterator[Delta],
                 release: Release = "sentence") -> Iterator[Delta]:
    """The stream a sentence (or clause) at a time through the streamable output rails; on a
    block the generation is cut (the source iterator closed) and a content_filter delta
    ends it."""
    rails = guards.streamable()
    if not rails:
        yield from deltas
        return
    watch = StreamWatch(rails, _ctx(check), release)
    try:
        for delta in deltas:
            shown = watch.feed(delta.text) if delta.text else ""
            if watch.blocked is not None:
                _note(check, watch.blocked, "output")
                yield Delta(text=check.refusal, finish_reason="content_filter")
                return
            if delta.finish_reason is not None or delta.usage is not None:
                shown += watch.finish()
                if watch.blocked is not None:
                    _note(check, watch.blocked, "output")
                    yield Delta(text=check.refusal, finish_reason="content_filter",
                                usage=delta.usage)
                    return
            if shown or delta.finish_reason or delta.usage:
                yield replace(delta, text=shown)
    finally:
        close = getattr(deltas, "close", None)
        if close is not None:
            close()


def _ctx(check: RawCheck) -> Context:
    question = next((m.content for m in reversed(check.messages) if m.role == "user"), "")
    return Context(question=question, language=check.language)


def _note(check: RawCheck, out: Outcome, stage: str) -> None:
    check.verdicts += [v.as_dict() for v in out.verdicts if v.action != "allow"]
    if out.blocked is not None:
        check.blocked = f"{stage}:{out.blocked.rail}"
