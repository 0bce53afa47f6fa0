"""Training rows as token ids, with the loss on the answer's tokens only.

The prompt is rendered by the base model's own chat template (the one llama.cpp applies when
the tuned model serves), the answer's tokens are appended, and every prompt position gets
label -100 so the model learns to answer, not to predict its users' questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from alicerce.errors import InputError
from alicerce.tune.data import Example

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    labels: list[int]
    truncated: bool


def encode(tokenizer: Any, example: Example, max_len: int) -> Encoded:
    eos = tokenizer.eos_token or ""
    if not example.prompt:  # continued pre-training: every token is a target
        ids = tokenizer(example.answer + eos, add_special_tokens=False)["input_ids"]
        return Encoded(ids[:max_len], ids[:max_len], len(ids) > max_len)
    messages = [{"role": m.role, "content": m.content} for m in example.prompt]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": example.answer}], tokenize=False)
    if not full.startswith(prompt):
        raise InputError(f"line {example.line}: the model's chat template does not render the "
                         "answer after the prompt", hint="use prompt/completion rows")
    head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    tail = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
    truncated = len(head) + len(tail) > max_len
    if truncated:  # keep the answer whole where possible, and the prompt's end
        tail = tail[:max_len - 1]
        head = head[len(head) - (max_len - len(tail)):]
    return Encoded(head + tail, [IGNORE] * len(head) + tail, truncated)


def collate(rows: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """A batch padded on the right to its longest row."""
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r.ids)] = torch.tensor(r.ids)
        labels[i, :len(r.labels)] = torch.tensor(r.labels)
        mask[i, :len(r.ids)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def token_accuracy(predicted: Any, labels: Any) -> float:
    """The share of answer tokens the model predicts exactly (next-token argmax)."""
    p, y = torch.as_tensor(predicted)[:, :-1], torch.as_tensor(labels)[:, 1:]
    keep = y != IGNORE
    return float((p[keep] == y[keep]).float().mean()) if keep.any() else 0.0
