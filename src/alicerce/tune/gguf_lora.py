"""A PEFT LoRA adapter as a GGUF LoRA adapter, which llama.cpp applies to the GGUF base it was
trained on.

Written on the `gguf` package's reader and writer instead of running llama.cpp's
`convert_lora_to_gguf.py`: that script is not on PyPI, wants the base model's Hugging Face
`config.json` (a bundled GGUF has none) and imports all of `convert_hf_to_gguf`. For the
architectures we ship its work is short: map PEFT's tensor names to GGUF names, permute the
rows of q and k for llama (llama.cpp stores them in its rope layout, and transformers undid
that when it read the GGUF we trained on), and write A and B in float32 with the alpha.
tests/test_gguf_lora.py checks our output tensor for tensor against that script's own
(tests/lora_reference holds its outputs and how they were made).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alicerce.errors import InputError

# Architectures whose converter permutes q/k rows (convert_hf_to_gguf's LlamaModel.permute).
_PERMUTED = {"llama"}
SUPPORTED = ("llama", "qwen2")  # the bundled models' architectures, each tested


@dataclass(frozen=True)
class BaseInfo:
    """What the conversion needs from the base GGUF: its architecture, heads and shapes."""

    arch: str
    n_head: int
    n_head_kv: int
    blocks: int
    shapes: dict[str, tuple[int, int]]  # weight name -> (rows out, columns in)


def base_info(path: Path) -> BaseInfo:
    """Read the base's metadata and tensor shapes (memory-mapped: no weights are loaded)."""
    import gguf

    reader = gguf.GGUFReader(path)

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    arch = str(field("general.architecture"))
    heads = int(field(f"{arch}.attention.head_count") or 0)
    shapes = {t.name: (int(t.shape[1]), int(t.shape[0]))
              for t in reader.tensors if len(t.shape) == 2}
    return BaseInfo(arch, heads, int(field(f"{arch}.attention.head_count_kv") or heads),
                    int(field(f"{arch}.block_count") or 0), shapes)


def convert(adapter: Path, base: Path, out: Path, name: str = "") -> Path:
    """Write `adapter` (a PEFT LoRA folder) as a GGUF LoRA for `base` to `out`, atomically."""
    import gguf
    from safetensors.numpy import load_file

    cfg = json.loads((adapter / "adapter_config.json").read_text())
    alpha = _alpha(cfg)
    info = base_info(base)
    if info.arch not in SUPPORTED:
        raise InputError(f"LoRA adapters for {info.arch!r} models do not convert to llama.cpp "
                         "yet", hint=f"tune a model of a supported family: {', '.join(SUPPORTED)}")
    arch_id = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[info.arch]
    names = gguf.get_tensor_name_map(arch_id, info.blocks)
    pairs: dict[str, dict[str, np.ndarray[Any, Any]]] = {}
    for key, value in load_file(str(adapter / "adapter_model.safetensors")).items():
        part = "a" if key.endswith(".lora_A.weight") else "b" if key.endswith(
            ".lora_B.weight") else ""
        if not part:
            raise InputError(f"the adapter holds {key}, which is not a LoRA matrix",
                             hint="llama.cpp applies only LoRA A/B matrices; train without "
                                  "modules_to_save")
        hf = key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0] + ".weight"
        target = names.get_name(hf, try_suffixes=(".weight",))
        if target is None or target not in info.shapes:
            raise InputError(f"{hf} has no matching weight in {base.name}",
                             hint="the adapter was trained on another model")
        pairs.setdefault(target, {})[part] = value.astype(np.float32)
    if not pairs:
        raise InputError(f"{adapter} holds no LoRA matrices", hint="train a LoRA adapter")
    checked = [(t, *_pair(t, pairs[t], info)) for t in sorted(pairs)]  # all, before writing
    tmp = out.with_name(f".{out.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), info.arch)
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        if name:
            writer.add_name(name)
        for target, a, b in checked:
            writer.add_tensor(f"{target}.lora_a", a)
            writer.add_tensor(f"{target}.lora_b", b)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, out)
    return out


def _alpha(cfg: dict[str, Any]) -> float:
    """The alpha llama.cpp needs to scale by what PEFT did (llama.cpp: alpha / rank)."""
    if cfg.get("peft_type") != "LORA":
        raise InputError(f"a {cfg.get('peft_type')} adapter does not convert to llama.cpp",
                         hint="only LoRA adapters run on llama.cpp; (IA)3 and prompt tuning "
                              "run on the transformers backend")
    if cfg.get("use_dora") or cfg.get("lora_bias") or cfg.get("rank_pattern") \
            or cfg.get("alpha_pattern"):
        raise InputError("DoRA, LoRA biases and per-layer ranks do not convert to llama.cpp",
                         hint="train a plain LoRA (alicerce tune run --method lora)")
    alpha, rank = float(cfg["lora_alpha"]), int(cfg["r"])
    return alpha * math.sqrt(rank) if cfg.get("use_rslora") else alpha  # rsLoRA: alpha/sqrt(r)


def _pair(target: str, ab: dict[str, np.ndarray[Any, Any]],
          info: BaseInfo) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    if set(ab) != {"a", "b"}:
        raise InputError(f"{target}: the adapter holds only lora_{next(iter(ab)).upper()}",
                         hint="the adapter's files are incomplete; train it again")
    a, b = ab["a"], ab["b"]
    out_rows, in_cols = info.shapes[target]
    if a.shape[1] != in_cols or b.shape[0] != out_rows or a.shape[0] != b.shape[1]:
        raise InputError(f"{target}: LoRA shapes {a.shape} x {b.shape} do not fit the base's "
                         f"({out_rows}, {in_cols})",
                         hint="the adapter was trained on another model")
    if info.arch in _PERMUTED and target.endswith(("attn_q.weight", "attn_k.weight")):
        heads = info.n_head if target.endswith("attn_q.weight") else info.n_head_kv
        b = (b.reshape(heads, 2, b.shape[0] // heads // 2, b.shape[1])
             .swapaxes(1, 2).reshape(b.shape))
    return np.ascontiguousarray(a), np.ascontiguousarray(b)
