"""Hugging Face transformers as a backend (the `tune` extra: CPU torch, PEFT).

It serves what llama.cpp cannot: beam search, PEFT adapters of every method ((IA)³ and
prompt tuning have no GGUF form), and requests for different LoRA adapters decoded in one
batch (hf_batch.py). It loads a bundled GGUF (dequantised to float32, about 4x its file size
in memory) or a local model folder.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from alicerce.errors import GeneratorError, InputError
from alicerce.generate.base import with_format
from alicerce.generate.hf_batch import Batcher, Done, Job, Rows
from alicerce.generate.params import DecodingParams, require
from alicerce.types import Choice, Completion, Delta, Message, Usage


def load_base(path: Path) -> tuple[Any, Any]:
    """Tokenizer and float32 model from a GGUF file (dequantised in memory) or a folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = {"gguf_file": path.name} if path.is_file() else {}
    folder = str(path.parent if path.is_file() else path)
    tok = AutoTokenizer.from_pretrained(folder, **where)
    model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **where)
    # The weights are plain float32 now; transformers still marks the model as GGUF-quantised
    # (its Trainer refuses to train such a model, PEFT to merge into it).
    model.is_quantized, model.hf_quantizer = False, None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok, model.eval()


class _Adapters:
    """The PEFT adapters on one base, shared by the generator's views and used under its
    lock. PEFT keeps adapters of one kind side by side in a model (LoRA with LoRA, (IA)³
    with (IA)³); switching kind unloads the others first."""

    def __init__(self, base: Any) -> None:
        self.base = base
        self.peft: Any = None
        self.kind = ""
        self.names: dict[Path, str] = {}

    @contextlib.contextmanager
    def use(self, folder: Path | None, method: str) -> Iterator[tuple[Any, Any]]:
        """(model to generate with, soft prompt to prepend or None)."""
        if folder is None:
            if self.peft is None or self.kind == "prompt":  # prompts leave the base as it was
                yield self.base, None
            else:
                with self.peft.disable_adapter():
                    yield self.peft, None
            return
        kind = self._ready(folder, method)
        self.peft.set_adapter(self.names[folder])
        if kind == "prompt":
            yield self.base, self.peft.get_prompt(batch_size=1)
        else:
            yield self.peft, None

    @contextlib.contextmanager
    def mixed(self, folders: Sequence[Path | None],
              method: str) -> Iterator[tuple[Any, list[str] | None]]:
        """(model, per-row adapter names or None) for a batch: rows with different LoRA
        adapters or none go through PEFT's `adapter_names`; otherwise every row shares one."""
        wanted = set(folders)
        if len(wanted) == 1:
            with self.use(folders[0], method) as (model, _):
                yield model, None
            return
        for folder in wanted:
            if folder is not None:
                self._ready(folder, method)
        yield self.peft, [self.names[f] if f is not None else "__base__" for f in folders]

    def _ready(self, folder: Path, method: str) -> str:
        """Load `folder` as an adapter of its kind (unloading other kinds); the kind."""
        kind = {"pretrain": "lora"}.get(method, method)
        if self.peft is not None and kind != self.kind:
            self.base = self.peft.get_base_model() if self.kind == "prompt" else self.peft.unload()
            self.peft, self.names = None, {}
        if folder not in self.names:
            self._load(folder, kind)
        return kind

    def _load(self, folder: Path, kind: str) -> None:
        from peft import PeftModel

        name = f"a{len(self.names)}"
        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base, str(folder), adapter_name=name)
                self.kind = kind
            else:
                self.peft.load_adapter(str(folder), adapter_name=name)
        except (OSError, ValueError, RuntimeError) as exc:
            raise GeneratorError(f"the adapter in {folder} could not be loaded: {exc}",
                                 hint="it may be damaged, or made for another base") from exc
        self.peft.eval()
        self.names[folder] = name


class TransformersGenerator:
    """A model on transformers, optionally with one of its PEFT adapters applied (`adapted`)."""

    backend = "transformers"

    def __init__(self, name: str, path: Path, context: int = 4096, threads: int = 0,
                 batch: int = 1) -> None:
        try:
            import torch
        except ImportError as exc:
            raise GeneratorError("the transformers backend needs torch, transformers and peft",
                                 hint="pip install torch==2.13.0 && pip install "
                                      "'alicerce[tune]'") from exc
        torch.set_num_threads(threads or os.cpu_count() or 1)
        try:
            self._tok, model = load_base(path)
        except (OSError, ValueError) as exc:
            raise GeneratorError(f"transformers could not load {path}: {exc}",
                                 hint="a bundled GGUF, or a folder saved with "
                                      "save_pretrained") from exc
        limit = getattr(model.config, "max_position_embeddings", None) or context
        self.name, self.base, self.path = name, name, path
        self.context_size = min(context, int(limit))
        self._adapters = _Adapters(model)
        self._lock = threading.Lock()  # one generate() at a time: CPU cores are the limit
        self._batcher = Batcher(self._tok, self._lock, batch, self._run_batch)
        self.adapter: Path | None = None
        self.method = ""

    def adapted(self, folder: Path, name: str, method: str) -> TransformersGenerator:
        """This model with the PEFT adapter in `folder` applied: a view sharing the model."""
        view = copy.copy(self)
        view.name, view.adapter, view.method = name, folder, method
        return view

    def count_tokens(self, text: str) -> int:
        return len(self._tok(text)["input_ids"])

    # -- requests ------------------------------------------------------------------------
    def _prepare(self, messages: Sequence[Message],
                 params: DecodingParams) -> tuple[Any, dict[str, Any]]:
        require(params, self.backend, self.name)
        ids = self._tok.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in with_format(messages, params)],
            add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
        room = self.context_size - ids.shape[1]
        if room < 1:
            raise InputError(f"the prompt has {ids.shape[1]} tokens, over the model's window "
                             f"of {self.context_size}", hint="shorten the input or history")
        sample = params.temperature > 0
        kw: dict[str, Any] = {
            "max_new_tokens": min(params.max_tokens, room), "do_sample": sample,
            "num_beams": params.num_beams, "num_return_sequences": params.n,
            "repetition_penalty": params.repetition_penalty,
            "pad_token_id": self._tok.pad_token_id,
            # generation_config's own defaults (top_k 50, ...) would apply unasked
            "top_k": None, "top_p": None, "temperature": None}
        if sample:
            kw.update(temperature=params.temperature, top_k=params.top_k or None,
                      top_p=params.top_p, min_p=params.min_p or None)
        if params.num_beams > 1:
            kw.update(length_penalty=params.length_penalty,
                      early_stopping=params.early_stopping)
        if params.stop:
            kw.update(stop_strings=list(params.stop), tokenizer=self._tok)
        return ids, kw

    def _run(self, ids: Any, kw: dict[str, Any], seed: int | None, adapter: Path | None,
             method: str) -> tuple[Any, int]:
        """Generated token ids [n, new] (under the lock) and the prompt's length."""
        import torch

        with self._adapters.use(adapter, method) as (model, soft):
            if seed is not None:
                torch.manual_seed(seed)
            with torch.no_grad():
                if soft is None:
                    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                         **kw)
                    return out[:, ids.shape[1]:], ids.shape[1]
                # a soft prompt goes in front of the prompt's embeddings; generate() then
                # returns only the new tokens
                embeds = torch.cat([soft.to(model.dtype),
                                    model.get_input_embeddings()(ids)], dim=1)
                out = model.generate(inputs_embeds=embeds,
                                     attention_mask=torch.ones(embeds.shape[:2],
                                                               dtype=torch.long), **kw)
                return out, embeds.shape[1]

    def _run_batch(self, jobs: list[Job], rows: Rows) -> None:
        """generate() over the jobs' prompts, left-padded, each row with its own adapter; a
        job that runs alone (a seed, a soft prompt) goes through `_run`."""
        import torch
        from transformers import StoppingCriteriaList

        if len(jobs) == 1:
            one = jobs[0]
            self._run(one.ids, {**one.kw, "streamer": rows, "stopping_criteria":
                                StoppingCriteriaList([rows.criteria()])},
                      one.seed, one.adapter, one.method)
            return
        width = max(int(j.ids.shape[1]) for j in jobs)
        ids = torch.full((len(jobs), width), self._tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, j in enumerate(jobs):
            n = int(j.ids.shape[1])
            ids[i, width - n:], mask[i, width - n:] = j.ids[0], 1
        kw = {**jobs[0].kw, "max_new_tokens": max(j.kw["max_new_tokens"] for j in jobs),
              "streamer": rows, "stopping_criteria": StoppingCriteriaList([rows.criteria()])}
        method = next((j.method for j in jobs if j.method), "")
        with self._adapters.mixed([j.adapter for j in jobs], method) as (model, names):
            extra = {"adapter_names": names} if names else {}
            with torch.no_grad():
                model.generate(input_ids=ids, attention_mask=mask, **kw, **extra)

    def complete(self, messages: Sequence[Message], params: DecodingParams) -> Completion:
        ids, kw = self._prepare(messages, params)
        started = time.perf_counter()
        if params.n == 1 and params.num_beams == 1:  # one sequence: decoded in a batch
            job = self._batcher.submit(self._job(ids, kw, params))
            done = next(r for r in job.results() if isinstance(r, Done))
            text = self._tok.decode(done.tokens, skip_special_tokens=True)
            cut = _cut(text, params.stop)
            ms = (time.perf_counter() - started) * 1000
            n = len(done.tokens)
            return Completion(self.name, (Choice(cut, "stop" if cut != text else done.finish),),
                              Usage(int(ids.shape[1]), n),
                              {"total_ms": ms, "decode_tok_s": n / max(ms / 1000, 1e-9)})
        with self._lock:
            new, prompt = self._run(ids, kw, params.seed, self.adapter, self.method)
        choices, completion = [], 0
        for row in new.tolist():
            tokens = _until_eos(row, self._tok.eos_token_id, self._tok.pad_token_id)
            completion += len(tokens)
            text = self._tok.decode(tokens, skip_special_tokens=True)
            cut = _cut(text, params.stop)
            ended = cut != text or len(tokens) < len(row) or len(tokens) < kw["max_new_tokens"]
            choices.append(Choice(cut, "stop" if ended else "length"))
        ms = (time.perf_counter() - started) * 1000
        return Completion(self.name, tuple(choices), Usage(prompt, completion),
                          {"total_ms": ms, "decode_tok_s": completion / max(ms / 1000, 1e-9)})

    def score(self, messages: Sequence[Message], text: str) -> float:
        """Log-likelihood of `text` as the reply: one forward pass over prompt and reply."""
        import torch

        chat = [{"role": m.role, "content": m.content} for m in messages]
        prompt = self._tok.apply_chat_template(chat, add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
        reply = self._tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = torch.cat([prompt["input_ids"], reply], dim=1)
        if ids.shape[1] > self.context_size:
            raise InputError(f"prompt and answer have {ids.shape[1]} tokens, over the "
                             f"model's window of {self.context_size}",
                             hint="explain a shorter answer, or raise llm_context")
        with self._lock, self._adapters.use(self.adapter, self.method) as (model, soft):
            if soft is not None:
                raise GeneratorError(f"{self.name} has a prompt-tuning adapter: its answers "
                                     "cannot be scored", hint="explain with the base model")
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        start = prompt["input_ids"].shape[1] - 1
        targets = ids[0, start + 1:]
        return float(logp[start:].gather(1, targets[:, None]).sum())

    def stream(self, messages: Sequence[Message], params: DecodingParams) -> Iterator[Delta]:
        if params.n > 1 or params.num_beams > 1:
            raise InputError("streaming returns one sequence, decoded token by token",
                             hint="use n=1 and num_beams=1 to stream, or ask without stream")
        ids, kw = self._prepare(messages, params)
        return self._batched(self._job(ids, kw, params), params)

    def _job(self, ids: Any, kw: dict[str, Any], params: DecodingParams) -> Job:
        return Job(ids, kw, self.adapter, self.method, params.seed)

    def _batched(self, job: Job, params: DecodingParams) -> Iterator[Delta]:
        """A streamed request decoded in a batch: its pieces as its row yields them."""
        self._batcher.submit(job)
        held = max((len(s) for s in params.stop), default=1) - 1  # a stop string may span pieces
        text, sent, count, finish = "", 0, 0, "stop"
        try:
            for item in job.results():
                if isinstance(item, Done):
                    count, finish = len(item.tokens), item.finish
                    break
                text, count = text + item.text, item.tokens
                cut = _cut(text, params.stop)
                if cut != text:
                    text = cut
                    break
                upto = max(sent, len(text) - held)
                if upto > sent:
                    yield Delta(text[sent:upto])
                    sent = upto
            if text[sent:]:
                yield Delta(text[sent:])
            yield Delta("", finish, Usage(int(job.ids.shape[1]), count))
        finally:
            job.cancelled.set()  # a consumer gone, or a stop string: the row ends


def _until_eos(row: list[int], eos: int | None, pad: int | None) -> list[int]:
    for i, t in enumerate(row):
        if t in (eos, pad):
            return row[:i]
    return row


def _cut(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first stop sequence (which OpenAI leaves out of the answer)."""
    ends = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[:min(ends)] if ends else text
