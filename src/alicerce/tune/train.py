"""Training on CPU torch: the bundled GGUF dequantised by transformers, wrapped by PEFT for
the chosen method, run by transformers' Trainer.

Why Trainer and not a loop of our own: it already does what the notes ask and users expect
of a mature tool, tested by many: logging every N steps, evaluation on the validation split,
early stopping with patience and threshold (EarlyStoppingCallback), checkpoints with
optimizer and scheduler state that resume exactly, and restoring the best checkpoint at the
end. The base is the GGUF that llama.cpp serves (transformers reads it with `gguf_file=`),
so an adapter is trained on the weights it will be applied to.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alicerce.errors import InputError
from alicerce.tune.config import FULL_MAX_PARAMS, TuneConfig
from alicerce.tune.data import Example
from alicerce.tune.encode import Encoded, collate, encode, token_accuracy
from alicerce.tune.runs import Progress


@dataclass(frozen=True)
class Trained:
    out: Path  # the adapter (PEFT folder) or the full model
    steps: int
    total_steps: int
    stopped_early: bool
    best_eval_loss: float | None
    trainable_params: int
    total_params: int
    seconds: float
    peak_rss_mb: float
    truncated_rows: int


def wrap(model: Any, cfg: TuneConfig) -> Any:
    """The model with the method's trainable parameters (PEFT), refusing impossible
    settings with the fix before any training."""
    if cfg.method == "full":
        total = sum(p.numel() for p in model.parameters())
        if total > FULL_MAX_PARAMS:
            raise InputError(f"full fine-tuning of {total / 1e6:.0f}M parameters does not fit "
                             "a laptop's memory", hint="use --method lora or ia3")
        return model
    from peft import IA3Config, LoraConfig, PromptTuningConfig, get_peft_model

    linear = {n.rsplit(".", 1)[-1]: m for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear)}
    if cfg.method in ("lora", "pretrain"):
        missing = [t for t in cfg.target_modules if t not in linear]
        if missing:
            raise InputError(f"target modules {missing} are not linear layers of this model",
                             hint=f"choose among: {', '.join(sorted(linear))}")
        smallest = min(min(linear[t].in_features, linear[t].out_features)
                       for t in cfg.target_modules)
        if cfg.lora_r > smallest:
            raise InputError(f"LoRA rank {cfg.lora_r} is larger than the smallest target layer "
                             f"({smallest})", hint=f"use --lora-r {min(64, smallest)} or less")
        peft_cfg: Any = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                   lora_dropout=cfg.lora_dropout,
                                   target_modules=list(cfg.target_modules),
                                   task_type="CAUSAL_LM")
    elif cfg.method == "ia3":
        ff = [m for m in ("down_proj", "fc2") if m in linear][:1]
        targets = [m for m in ("k_proj", "v_proj") if m in linear] + ff
        peft_cfg = IA3Config(target_modules=targets, feedforward_modules=ff,
                             task_type="CAUSAL_LM")
    else:
        peft_cfg = PromptTuningConfig(num_virtual_tokens=cfg.prompt_tokens,
                                      task_type="CAUSAL_LM")
    return get_peft_model(model, peft_cfg)


class _Rows(torch.utils.data.Dataset[Encoded]):
    def __init__(self, rows: Sequence[Encoded]) -> None:
        self.rows = list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Encoded:
        return self.rows[i]


def train(tok: Any, model: Any, cfg: TuneConfig, rows: tuple[Sequence[Example],
                                                            Sequence[Example]],
          out: Path, *, resume: bool = False, progress: Progress | None = None,
          history: Sequence[dict[str, float]] = (),
          on_log: Callable[[list[dict[str, float]]], None] | None = None) -> Trained:
    """Train `model` (already wrapped) on (train, validation) rows; checkpoints go under
    `out/checkpoints`, the result to `out/adapter`. Resuming, the run's `history` up to its
    last checkpoint is kept and the steps after it are logged again."""
    from transformers import (
        EarlyStoppingCallback,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    train_rows = [encode(tok, e, cfg.max_seq_len) for e in rows[0]]
    eval_rows = [encode(tok, e, cfg.max_seq_len) for e in rows[1]]
    truncated = sum(r.truncated for r in (*train_rows, *eval_rows))
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"),
                         key=lambda p: int(p.name.rsplit("-", 1)[-1]))
    start = int(checkpoints[-1].name.rsplit("-", 1)[-1]) if resume and checkpoints else 0
    logged = [dict(h) for h in history if h.get("step", 0) <= start]

    class Watch(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None,
                   **kw: Any) -> None:
            entry = {k: float(v) for k, v in (logs or {}).items()
                     if isinstance(v, int | float)}
            logged.append({"step": float(state.global_step), **entry})
            if on_log is not None:
                on_log(logged)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if progress is not None:
                progress(state.global_step, state.max_steps, logged[-1] if logged else {})

    evaluate = bool(eval_rows)
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps, logging_steps=cfg.log_every,
        eval_strategy="steps" if evaluate else "no", eval_steps=cfg.log_every,
        save_strategy="steps", save_steps=cfg.log_every, save_total_limit=2,
        load_best_model_at_end=evaluate, metric_for_best_model="eval_loss",
        greater_is_better=False, seed=cfg.seed, use_cpu=True, report_to="none",
        dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False,
        save_only_model=False)
    callbacks: list[Any] = [Watch()]
    if evaluate and cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience,
                                               cfg.early_stopping_threshold))
    pad = int(tok.pad_token_id)
    trainer = Trainer(
        model=model, args=args, train_dataset=_Rows(train_rows),
        eval_dataset=_Rows(eval_rows) if evaluate else None,
        data_collator=lambda batch: collate(batch, pad), callbacks=callbacks,
        preprocess_logits_for_metrics=lambda logits, labels: logits[:, -labels.shape[1]:]
        .argmax(-1),
        compute_metrics=lambda p: {"token_accuracy": token_accuracy(p.predictions,
                                                                    p.label_ids)})
    # With tqdm off, Trainer prints each log dict to stdout, which would break
    # `tune run --json`; our Watch callback reports them instead.
    trainer.remove_callback(PrinterCallback)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if start else None)
    seconds = time.perf_counter() - t0
    state = trainer.state
    (out / "adapter").mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(out / "adapter"))
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Trained(out / "adapter", int(state.global_step), int(state.max_steps),
                   bool(state.global_step < state.max_steps), state.best_metric,
                   trainable, total, seconds,
                   resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, truncated)
