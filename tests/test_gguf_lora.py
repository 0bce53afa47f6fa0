"""The LoRA converter: its GGUF is tensor for tensor what llama.cpp's own
convert_lora_to_gguf.py writes (tests/lora_reference, see make.py there), for a llama base
(q/k rows permuted) and a qwen2 base (not); adapters that cannot run on llama.cpp, or were
trained on another model, are refused with the reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from alicerce.errors import InputError  # noqa: E402
from alicerce.tune.gguf_lora import base_info, convert  # noqa: E402

REF = Path(__file__).parent / "lora_reference"


def tiny_base(arch: str, path: Path, *, hidden: int | None = None) -> Path:
    """A GGUF base with the reference configuration's metadata and (zero) weights."""
    cfg = json.loads((REF / arch / "base_config.json").read_text())
    h, inter = hidden or cfg["hidden_size"], cfg["intermediate_size"]
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    for b in range(cfg["num_hidden_layers"]):
        for name, shape in (("attn_q", (h, h)), ("attn_k", (kv, h)), ("attn_v", (kv, h)),
                            ("attn_output", (h, h)), ("ffn_gate", (inter, h)),
                            ("ffn_up", (inter, h)), ("ffn_down", (h, inter))):
            w.add_tensor(f"blk.{b}.{name}.weight", np.zeros(shape, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def read(path: Path) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    r = gguf.GGUFReader(path)
    keys = {k: f.contents() for k, f in r.fields.items()
            if k in ("general.architecture", "general.type", "adapter.type",
                     "adapter.lora.alpha")}
    return keys, {t.name: np.array(t.data) for t in r.tensors}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_the_conversion_matches_llama_cpps_own(tmp_path: Path, arch: str) -> None:
    base = tiny_base(arch, tmp_path / "base.gguf")
    assert base_info(base).arch == arch
    out = convert(REF / arch, base, tmp_path / "adapter.gguf")
    keys, tensors = read(out)
    ref_keys, ref_tensors = read(REF / arch / "reference.gguf")
    assert keys == ref_keys and keys["adapter.type"] == "lora"
    assert sorted(tensors) == sorted(ref_tensors) and len(tensors) == 28
    for name, data in ref_tensors.items():
        assert tensors[name].shape == data.shape, name
        assert np.array_equal(tensors[name], data), name
    if arch == "llama":  # the permutation is really exercised: B of q differs from PEFT's
        from safetensors.numpy import load_file
        peft_b = load_file(str(REF / arch / "adapter_model.safetensors"))[
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
        assert not np.array_equal(peft_b, tensors["blk.0.attn_q.weight.lora_b"])


def test_adapters_llama_cpp_cannot_run_are_refused(tmp_path: Path) -> None:
    base = tiny_base("llama", tmp_path / "base.gguf")
    ia3 = tmp_path / "ia3"
    shutil.copytree(REF / "llama", ia3)
    (ia3 / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(InputError, match="IA3 adapter does not convert"):
        convert(ia3, base, tmp_path / "x.gguf")
    other = tiny_base("llama", tmp_path / "other.gguf", hidden=96)  # another model
    with pytest.raises(InputError, match="do not fit") as err:
        convert(REF / "llama", other, tmp_path / "x.gguf")
    assert "another model" in (err.value.hint or "")
    assert not (tmp_path / "x.gguf").exists()
