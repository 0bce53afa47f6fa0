"""Re-quantised variants of a bundled model against the shipped file: prompt processing and
decode speed on this CPU, side by side in one run.

    python bench/requant.py [--model qwen-1.5b] [--types Q4_0,Q8_0,F16] [--reps 2]

The only local route to another quantisation is to dequantise the shipped Q4_K_M with the
`gguf` package (`pip install 'alicerce[bench]'`) and quantise again: Q4_0 and Q8_0 use
llama.cpp's simpler block formats (its tinyBLAS prompt kernels take them; on AVX2 Q4_0 is
also repacked), F16 is the dequantised weights themselves. A variant cannot be more accurate
than the Q4_K_M it comes from, so it stays only if it is faster. Each file is timed by
`bench/llama_knobs.py`'s default configuration in a fresh process (~600-token prompt, 96
tokens generated, median of `--reps`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine

HERE = Path(__file__).resolve().parent
FILE_TYPE = {"Q4_0": 2, "Q8_0": 7, "F16": 1}  # llama_ftype, recorded in general.file_type


def requantise(src: Path, dst: Path, target: str) -> None:
    """`src` with every quantised matrix as `target`; norms and biases stay F32."""
    import gguf
    import numpy as np
    from gguf import GGMLQuantizationType as T
    from gguf.quants import dequantize, quantize

    qtype = getattr(T, target)
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, str(reader.fields["general.architecture"].contents()))
    for f in reader.fields.values():
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF."):
            continue
        kind = f.types[0]
        value = FILE_TYPE[target] if f.name == "general.file_type" else f.contents()
        writer.add_key_value(f.name, value, kind,
                             sub_type=f.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    tensors = []
    for t in reader.tensors:
        if t.tensor_type in (T.F32, T.F16) or len(t.shape) < 2:
            tensors.append((t.name, t.data, t.tensor_type))
            continue
        weights = dequantize(t.data, t.tensor_type)
        data = weights.astype(np.float16) if qtype == T.F16 else quantize(weights, qtype)
        tensors.append((t.name, data, qtype))
    for name, data, kind in tensors:
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data, _ in tensors:
        writer.write_tensor_data(data)
    writer.close()


def timed(model: str, reps: int) -> str:
    out = subprocess.run([sys.executable, str(HERE / "llama_knobs.py"), "--model", model,
                          "--configs", "default", "--reps", str(reps)],
                         capture_output=True, text=True, check=False)
    lines = [x for x in out.stdout.splitlines() if x.startswith("default")]
    if not lines:
        return f"failed: {out.stderr[-300:]}"
    return lines[-1][len("default"):].split("(prefill")[0].strip()  # not its own ratio


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen-1.5b")
    ap.add_argument("--types", default="Q4_0,Q8_0,F16")
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    from alicerce import Settings
    from alicerce.generate.models import model_path, resolve

    src = model_path(resolve(a.model, Settings()), Settings())
    print(machine())
    print(f"{'variant':<10} {'MB':>6} {'convert s':>9}   load s / prompt n / prefill t/s / "
          "decode t/s / wall s")
    print(f"{'shipped':<10} {src.stat().st_size / 2**20:>6.0f} {'':>9}   {timed(str(src), a.reps)}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="alicerce-requant-") as tmp:
        for target in a.types.split(","):
            dst = Path(tmp) / f"{a.model}-{target}.gguf"
            t0 = time.perf_counter()
            requantise(src, dst, target)
            took = time.perf_counter() - t0
            print(f"{target:<10} {dst.stat().st_size / 2**20:>6.0f} {took:>9.0f}   "
                  f"{timed(str(dst), a.reps)}", flush=True)
            dst.unlink()


if __name__ == "__main__":
    main()
