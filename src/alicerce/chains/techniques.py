"""Prompting techniques over any Generator, each a short sequence of registry prompts.

zero-shot and k-shot (static examples, or the k most similar to the input by embedding) are
one call. Chain-of-thought asks for a marked final line and splits it from the reasoning;
zero-shot CoT is Kojima et al.'s two calls (reason, then extract). Least-to-most decomposes
into sub-questions and solves them in order, each seeing the earlier answers. Step-back asks
the more general question first and answers it, then the original with that background.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from alicerce.embed.base import Embedder
from alicerce.errors import InputError
from alicerce.generate.base import Generator
from alicerce.generate.params import DecodingParams
from alicerce.language import detect
from alicerce.prompts.template import PromptTemplate
from alicerce.types import Completion, Usage

Technique = Literal["zero-shot", "k-shot", "cot", "zero-shot-cot", "least-to-most", "step-back"]
TECHNIQUES: tuple[Technique, ...] = ("zero-shot", "k-shot", "cot", "zero-shot-cot",
                                     "least-to-most", "step-back")
FINAL = {"pt": "Resposta final:", "en": "Final answer:"}
_FINAL = re.compile(r"(?:resposta final|final answer)\s*:\s*", re.IGNORECASE)
_NUMBERED = re.compile(r"^\s*(?:\d+[.)]|[-*])\s*(.+)$")
MAX_STEPS = 5


@dataclass(frozen=True)
class Example:
    input: str
    output: str


@dataclass(frozen=True)
class Generation:
    """A technique's result: the answer, and the reasoning or steps that led to it."""

    text: str
    technique: str
    candidates: tuple[str, ...]
    reasoning: str
    steps: tuple[tuple[str, str], ...]
    prompts: tuple[str, ...]
    usage: Usage
    timings: dict[str, float]
    last: Completion
    trace_id: str = ""  # set by Alicerce.generate once the call is traced


class Runner:
    def __init__(self, generator: Generator, prompt: Callable[[str], PromptTemplate],
                 params: DecodingParams) -> None:
        self._gen, self._prompt, self.params = generator, prompt, params
        self.used: list[str] = []
        self.usage = Usage()

    def call(self, name: str, final: bool = False, **values: object) -> Completion:
        prompt = self._prompt(name)
        if prompt.ref not in self.used:
            self.used.append(prompt.ref)
        messages = prompt.render(**values)
        params = self.params if final else replace(
            self.params, n=1, format="text", json_schema=None, logprobs=False, top_logprobs=0,
            max_tokens=max(self.params.max_tokens, 256))
        done = self._gen.complete(messages, params)
        self.usage += done.usage
        return done


def run(technique: str, text: str, generator: Generator,
        prompt: Callable[[str], PromptTemplate], params: DecodingParams, *,
        instructions: str = "", examples: Sequence[Example] = (), k: int = 0,
        embedder: Embedder | None = None) -> Generation:
    """Apply `technique` to `text`; `k` > 0 with an embedder picks examples by similarity."""
    if technique not in TECHNIQUES:
        raise InputError(f"unknown technique {technique!r}", hint="use " + ", ".join(TECHNIQUES))
    if not text.strip():
        raise InputError("the input is empty", hint="give the text to work on")
    if technique == "k-shot" and not examples:
        raise InputError("k-shot needs examples",
                         hint='--examples ex.jsonl with lines {"input": ..., "output": ...}')
    t0 = time.perf_counter()
    r = Runner(generator, prompt, params)
    reasoning = ""
    steps: tuple[tuple[str, str], ...] = ()
    language = detect(text)
    if technique == "zero-shot":
        last = r.call("zero-shot", True, instructions=instructions, input=text)
        answer = last.text
    elif technique == "k-shot":
        chosen = select(examples, text, k, embedder) if k else list(examples)
        last = r.call("k-shot", True, instructions=instructions, input=text,
                      examples=[{"input": e.input, "output": e.output} for e in chosen])
        answer = last.text
    elif technique == "cot":
        last = r.call("cot", True, instructions=instructions, input=text,
                      final_marker=FINAL[language])
        reasoning, answer = split_final(last.text)
    elif technique == "zero-shot-cot":
        reasoning = r.call("zero-shot-cot", instructions=instructions, input=text).text.strip()
        last = r.call("cot-extract", True, input=text, reasoning=reasoning)
        answer = last.text
    elif technique == "least-to-most":
        last, steps = _least_to_most(r, text)
        answer = last.text
    else:
        general = _first_line(r.call("step-back", input=text).text) or text
        background = r.call("zero-shot", instructions="", input=general).text.strip()
        last = r.call("step-back-answer", True, context="", input=text, step_back=general,
                      step_back_answer=background)
        steps, answer = ((general, background),), last.text
    return Generation(answer.strip(), technique, tuple(c.text.strip() for c in last.choices),
                      reasoning, tuple(steps), tuple(r.used), r.usage,
                      {"total_ms": (time.perf_counter() - t0) * 1000}, last)


def _least_to_most(r: Runner, text: str) -> tuple[Completion, tuple[tuple[str, str], ...]]:
    plan = r.call("least-to-most-decompose", input=text).text
    questions = [m.group(1).strip() for ln in plan.splitlines() if (m := _NUMBERED.match(ln))]
    questions = questions[: MAX_STEPS - 1]
    solved: list[dict[str, str]] = []
    for q in questions:
        a = r.call("least-to-most-solve", context="", input=text, solved=solved, question=q)
        solved.append({"question": q, "answer": a.text.strip()})
    last = r.call("least-to-most-solve", True, context="", input=text, solved=solved,
                  question=text)
    steps = tuple((s["question"], s["answer"]) for s in solved)
    return last, steps


def select(examples: Sequence[Example], text: str, k: int,
           embedder: Embedder | None) -> list[Example]:
    """The k examples whose inputs are most similar to `text` (most similar last)."""
    if embedder is None:
        raise InputError("choosing examples by similarity needs an embedder")
    if k >= len(examples):
        return list(examples)
    vecs = embedder.embed_queries([e.input for e in examples] + [text])
    sims = vecs[:-1] @ vecs[-1]
    best = np.argsort(-sims, kind="stable")[:k]
    return [examples[i] for i in best[::-1]]  # nearest example sits next to the input


def split_final(text: str) -> tuple[str, str]:
    """(reasoning, final answer): after the last final-answer marker, else the last line."""
    marks = list(_FINAL.finditer(text))
    if marks:
        m = marks[-1]
        return text[: m.start()].strip(), text[m.end():].strip()
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) <= 1:
        return "", text.strip()
    return "\n".join(lines[:-1]).strip(), lines[-1].strip()


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


def load_examples(rows: Sequence[dict[str, object]]) -> list[Example]:
    out = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not {"input", "output"} <= set(row):
            raise InputError(f"example {i} needs 'input' and 'output' fields",
                             hint='one JSON object per line: {"input": "...", "output": "..."}')
        out.append(Example(str(row["input"]), str(row["output"])))
    return out
