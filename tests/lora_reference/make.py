"""Make the reference conversions tests/test_gguf_lora.py checks our converter against.

For two tiny configurations, llama (grouped-query heads: llama.cpp permutes the q and k rows)
and qwen2 (no permutation), this writes a random PEFT LoRA adapter (rank 4 on the attention and
MLP projections) and converts it with llama.cpp's own `convert_lora_to_gguf.py`. The outputs
are small and kept in this folder, so the tests need neither llama.cpp's scripts nor a network.

Made with the scripts vendored in the llama-cpp-python 0.3.36 sdist (llama.cpp, MIT):
    pip download llama-cpp-python==0.3.36 --no-deps --no-binary :all:
    tar xzf llama_cpp_python-0.3.36.tar.gz
    python tests/lora_reference/make.py llama_cpp_python-0.3.36/vendor/llama.cpp
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).parent
CONFIGS = {
    "llama": {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
              "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
              "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 32,
              "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0},
    "qwen2": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
              "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
              "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 32,
              "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "rope_theta": 10000.0},
}
RANK, ALPHA = 4, 8


def shapes(cfg: dict[str, int]) -> dict[str, tuple[int, int]]:
    """(out, in) of each adapted projection."""
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    return {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h),
            "self_attn.v_proj": (kv, h), "self_attn.o_proj": (h, h),
            "mlp.gate_proj": (i, h), "mlp.up_proj": (i, h), "mlp.down_proj": (h, i)}


def adapter(arch: str, folder: Path) -> None:
    cfg = CONFIGS[arch]
    gen = torch.Generator().manual_seed(7)
    tensors = {}
    for layer in range(int(cfg["num_hidden_layers"])):
        for module, (out, inp) in shapes(cfg).items():
            key = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(RANK, inp, generator=gen)
            tensors[f"{key}.lora_B.weight"] = torch.randn(out, RANK, generator=gen)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": RANK, "lora_alpha": ALPHA, "use_rslora": False,
        "target_modules": sorted({m.split(".")[1] for m in shapes(cfg)}),
        "task_type": "CAUSAL_LM"}, indent=1))


def main(llama_cpp: Path) -> None:
    for arch, cfg in CONFIGS.items():
        folder = HERE / arch
        adapter(arch, folder)
        (folder / "base_config.json").write_text(json.dumps(cfg, indent=1))
        with tempfile.TemporaryDirectory() as base:
            (Path(base) / "config.json").write_text(json.dumps(cfg))
            subprocess.run([sys.executable, str(llama_cpp / "convert_lora_to_gguf.py"),
                            "--base", base, "--outtype", "f32",
                            "--outfile", str(folder / "reference.gguf"), str(folder)],
                           check=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
