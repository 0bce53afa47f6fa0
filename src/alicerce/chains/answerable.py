"""Do the sources answer the question? Asked of the answering model before it answers.

Retrieval always finds something for an on-topic question, and a small model answers from
whatever it is shown: qwen-1.5b abstained on 0 of 6 of Pirá's unanswerable questions. The
check appends one yes/no question to the answer's own prompt (the sources and the question
come first, so llama.cpp's prompt cache serves the answer's prefill from the check's: it
costs the ~20 tokens it adds and one decoded token) and reads P(yes) from the first token's
log-probabilities. Below `answerable_min` the step abstains without answering. The threshold
is calibrated by `bench/answerability.py` on Pirá's validation split and FaQuAD questions
whose paragraph was taken out of the collection, never on the evaluation samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from alicerce.generate.base import Generator
from alicerce.retrieve.rerankers import ONE_TOKEN, yes_share
from alicerce.types import Message, Usage

CHECK = {"pt": "As fontes acima respondem a esta pergunta? Responda apenas sim ou não.",
         "en": "Do the sources above answer this question? Reply only yes or no."}


def check_messages(messages: Sequence[Message], language: str) -> tuple[Message, ...]:
    """The answer's prompt with the yes/no question after its last (user) message."""
    last = messages[-1]
    return (*messages[:-1],
            replace(last, content=f"{last.content}\n\n{CHECK.get(language, CHECK['en'])}"))


def answerable(gen: Generator, messages: Sequence[Message],
               language: str) -> tuple[float, Usage]:
    """P(the sources shown in `messages` answer its question), and what asking cost."""
    done = gen.complete(check_messages(messages, language), ONE_TOKEN)
    return yes_share(done.choices[0]), done.usage
