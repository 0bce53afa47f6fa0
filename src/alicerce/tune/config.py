"""A tuning run's settings, with the names the user's notes use (total training epochs,
batch size, learning rate, early-stopping threshold and patience, log interval in steps), all
checked before the base model is loaded."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Method = Literal["lora", "ia3", "prompt", "full", "pretrain"]
METHODS: dict[str, str] = {
    "lora": "LoRA: low-rank updates to the attention (and optionally MLP) matrices",
    "ia3": "(IA)3, the T-Few family: learned vectors that rescale keys, values and the MLP",
    "prompt": "prompt tuning: soft prompt tokens learned in front of every input",
    "full": "full fine-tuning: every weight (small models only)",
    "pretrain": "continued pre-training on raw text (LoRA, causal LM loss on every token)",
}
FULL_MAX_PARAMS = 600_000_000  # full fine-tuning beyond this does not fit a laptop's RAM


class TuneConfig(BaseModel):
    """Defaults train SmolLM2-135M or qwen-0.5b on a 2-core CPU in minutes per hundred rows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = "lora"
    epochs: float = Field(default=3.0, gt=0, le=100, description="Total training epochs.")
    batch_size: int = Field(default=8, ge=1, le=256)
    learning_rate: float = Field(default=2e-4, gt=0, le=1.0)
    early_stopping_patience: int = Field(
        default=15, ge=0, le=10_000,
        description="Evaluations without improvement before stopping (0: never stop early).")
    early_stopping_threshold: float = Field(
        default=1e-4, ge=0, le=10,
        description="The validation loss must fall by more than this to count as progress.")
    log_every: int = Field(
        default=10, ge=1, le=100_000,
        description="Log model metrics (and evaluate, and checkpoint) every this many steps.")
    eval_split: float = Field(default=0.1, ge=0.0, le=0.5)
    seed: int = Field(default=42, ge=0)
    max_seq_len: int = Field(default=512, ge=16, le=8192)
    grad_accum: int = Field(default=1, ge=1, le=256)
    warmup_steps: int = Field(default=0, ge=0, le=100_000)
    lora_r: int = Field(default=8, ge=1, le=256)
    lora_alpha: int = Field(default=16, ge=1, le=1024)
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    prompt_tokens: int = Field(default=20, ge=1, le=512, description="Soft prompt length.")

    @model_validator(mode="after")
    def _coherent(self) -> TuneConfig:
        if self.early_stopping_patience and self.eval_split == 0:
            raise ValueError("early stopping needs validation rows: set eval_split > 0 or "
                             "early_stopping_patience 0")
        if not self.target_modules or any(not m or not m.replace("_", "").isalnum()
                                          for m in self.target_modules):
            raise ValueError("target_modules: names of linear layers, e.g. q_proj,v_proj")
        return self
