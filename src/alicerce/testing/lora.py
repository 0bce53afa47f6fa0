"""Random LoRA adapters on the bundled SmolLM2, made in seconds: real PEFT folders with
their GGUF form, for tests of adapter serving (no training needed to change the output)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alicerce.config import Settings
from alicerce.tune.registry import GGUF_FILE


def random_lora(settings: Settings, folder: Path, targets: list[str],
                seed: int = 0) -> tuple[Path, Any, Any]:
    """(base GGUF, tokenizer, PEFT model): a random LoRA on SmolLM2 (B not zero, scaled to
    change the answer without wrecking it), saved to `folder` and converted for llama.cpp."""
    import torch
    from peft import LoraConfig, get_peft_model

    from alicerce.generate.hf import load_base
    from alicerce.generate.models import BUNDLED, materialise
    from alicerce.tune.gguf_lora import convert

    base = materialise(BUNDLED["smollm2-135m"], settings.model_cache.expanduser())
    tok, model = load_base(base)
    torch.manual_seed(seed)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets,
                                            init_lora_weights=False, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.mul_(0.3)
    peft.save_pretrained(str(folder))
    convert(folder, base, folder / GGUF_FILE)
    return base, tok, peft


def random_loras(settings: Settings, folders: list[Path], targets: list[str],
                 model: str = "smollm2-135m", rank: int = 8,
                 seed: int = 0) -> tuple[Path, Any, Any]:
    """One random LoRA per folder (seeds seed, seed+1, ...) on one loaded `model` (for
    benchmarks: many adapters without loading the base for each)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from alicerce.generate.hf import load_base
    from alicerce.generate.models import BUNDLED, materialise
    from alicerce.tune.gguf_lora import convert

    base = materialise(BUNDLED[model], settings.model_cache.expanduser())
    tok, loaded = load_base(base)
    peft = get_peft_model(loaded, LoraConfig(r=rank, lora_alpha=2 * rank,
                                             target_modules=targets, init_lora_weights=False,
                                             task_type="CAUSAL_LM"))
    for i, folder in enumerate(folders):
        torch.manual_seed(seed + i)
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_" in name:
                    p.copy_(torch.randn_like(p) * (0.3 if "lora_B" in name else 1.0)
                            / p.shape[-1] ** 0.5)
        peft.save_pretrained(str(folder))
        convert(folder, base, folder / GGUF_FILE)
    return base, tok, peft


def taught_lora(settings: Settings, folder: Path, reply: str, prompts: list[str],
                steps: int = 30) -> Path:
    """A LoRA on SmolLM2 taught in a few steps to answer every prompt with `reply`: an
    adapter whose output is unmistakable and confident (random ones leave near-ties that
    batching can flip), saved to `folder` and converted for llama.cpp."""
    import torch
    from peft import LoraConfig, get_peft_model

    from alicerce.generate.hf import load_base
    from alicerce.generate.models import BUNDLED, materialise
    from alicerce.tune.gguf_lora import convert

    base = materialise(BUNDLED["smollm2-135m"], settings.model_cache.expanduser())
    tok, model = load_base(base)
    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16,
                                            target_modules=["q_proj", "v_proj", "o_proj"],
                                            task_type="CAUSAL_LM"))
    rows = []
    for prompt in prompts:
        head = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                       add_generation_prompt=True, return_tensors="pt",
                                       return_dict=True)["input_ids"][0]
        tail = torch.tensor(tok(reply + tok.eos_token)["input_ids"])
        ids = torch.cat([head, tail])
        labels = ids.clone()
        labels[:len(head)] = -100
        rows.append((ids[None], labels[None]))
    peft.train()
    opt = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=3e-3)
    for step in range(steps):
        ids, labels = rows[step % len(rows)]
        loss = peft(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    peft.save_pretrained(str(folder))
    convert(folder, base, folder / GGUF_FILE)
    return folder
