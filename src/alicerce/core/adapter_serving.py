"""Adapters served on a loaded base: which backend serves which, checked before any work.

- llama.cpp: LoRA only (converted to GGUF at registration), every one registered for the
  base's weights attached at load; a change of that set swaps the instance (generate/pool).
- transformers: every PEFT method, loaded on first use (generate/hf).
- a remote OpenAI-compatible server (vLLM --enable-lora): the adapters its configuration
  lists, passed through as the request's `model`; the server holds their weights.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

from alicerce.core.knowledge import KnowledgeBase
from alicerce.errors import AlicerceError, InputError, NotFoundError
from alicerce.generate import Generator, get_generator
from alicerce.generate.llamacpp import LlamaCppGenerator
from alicerce.generate.models import model_identity as _identity
from alicerce.generate.models import resolve
from alicerce.generate.pool import BasePool, Swap
from alicerce.tune.registry import PEFT_METHODS, AdapterVersion, check_adapter


class AdapterServing(KnowledgeBase):
    """Loaded bases (swapped when their adapters change) and the adapters on them."""

    def _base(self, name: str) -> Generator | BasePool:
        """The loaded remote or transformers model, or the pool of a llama.cpp one."""
        if name not in self._loaded and name not in self._pools:
            ref = resolve(name, self.settings)
            if ref.kind == "gguf" and ref.backend == "llama.cpp":
                self._pools[name] = BasePool(name, functools.partial(self._build, name))
            else:
                self._loaded[name] = get_generator(name, self.settings)
        return self._pools[name] if name in self._pools else self._loaded[name]

    def _with_adapter(self, name: str, adapter: str) -> Generator:
        """`name` with `adapter` (NAME@N, as deploy or `serve_adapter` fixed it) applied."""
        base = self._base(name)
        if not isinstance(base, BasePool):
            if resolve(name, self.settings).kind == "openai":
                self._remote_check(name, adapter)
                return base.adapted(adapter, f"{name}:{adapter}")  # type: ignore[attr-defined,no-any-return]
            found = self.adapters.get(adapter, "admin")  # deploy checked who may use it
            check_adapter(found, name, self._weights(name), base.backend)
            return base.adapted(found.path, f"{name}:{adapter}", found.method)  # type: ignore[attr-defined,no-any-return]
        path = self._adapter_paths.get(adapter)
        gen = base.current
        if path is None or gen is None or path not in gen.adapters:
            found = self.adapters.get(adapter, "admin")
            check_adapter(found, name, self._weights(name))
            assert found.gguf is not None
            path = self._adapter_paths[adapter] = found.gguf
            gen = base.instance(lambda: self._attachable(name))
            if path not in gen.adapters:  # registered after the model loaded: swap
                gen = base.ensure(self._attachable(name))
        return gen.adapted(path, f"{name}:{adapter}")

    def served_adapters(self, caller: str, models: list[str]) -> list[tuple[str, str]]:
        """(`BASE:NAME@N` and `BASE:NAME`, BASE) for every adapter `caller` may be served on
        each of `models`: those its backend runs and trained on its weights, or for a remote
        endpoint the names its configuration lists."""
        rows: dict[str, str] = {}
        mine = self.adapters.servable_list(caller)
        for model in models:
            if model in self._generators:  # registered in this process: no adapters
                continue
            ref = resolve(model, self.settings)
            if ref.kind == "openai":
                rows.update({f"{model}:{a}": model for a in ref.adapters})
                continue
            identity = self._weights(model)
            for a in mine:
                if a.base_identity != identity:
                    continue
                if (a.gguf is not None if ref.backend == "llama.cpp"
                        else a.method in PEFT_METHODS):
                    rows[f"{model}:{a.name}"] = rows[f"{model}:{a.ref}"] = model
        return sorted(rows.items())

    def refresh_adapters(self) -> list[Swap]:
        """Reload each loaded llama.cpp base whose registered adapters changed (registered
        or removed since it loaded), beside the running instance; what each swap did."""
        done = []
        for name, pool in list(self._pools.items()):
            wanted = self._attachable(name)
            if pool.current is not None and pool.current.adapters != wanted:
                with contextlib.suppress(AlicerceError):  # in pool.last; the old one serves
                    pool.ensure(wanted, wait=False)
                if pool.last is not None:
                    done.append(pool.last)
        return done

    def swaps(self) -> list[Swap]:
        """The last adapter swap of each loaded llama.cpp base."""
        return [p.last for p in self._pools.values() if p.last is not None]

    def _attachable(self, name: str) -> tuple[Path, ...]:
        """The llama.cpp forms of every adapter registered for `name`'s weights."""
        identity = self._weights(name)
        return tuple(sorted({a.gguf for a in self.adapters.list("admin")
                             if a.gguf is not None and a.base_identity == identity}))

    def _build(self, name: str, adapters: tuple[Path, ...]) -> LlamaCppGenerator:
        gen = get_generator(name, self.settings, adapters)
        assert isinstance(gen, LlamaCppGenerator)
        return gen

    def pin_adapter(self, ref: str, model: str, caller: str = "local") -> tuple[str, str]:
        """An app's `adapter:` as NAME@N and its content hash, refused unless `caller` may
        use it, `model`'s backend runs it and it was trained on `model`'s weights."""
        if resolve(model, self.settings).kind == "openai":
            self._remote_check(model, ref)
            return ref, _identity(model, self.settings) + f"#{ref}"
        adapter = self.adapters.get(ref, caller)
        self._check(adapter, model)
        return adapter.ref, f"sha256:{adapter.hash}"

    def serve_adapter(self, ref: str, model: str, caller: str) -> str:
        """A request's adapter on `model` as NAME@N: the caller's or the operator's
        (AdapterRegistry.servable), that `model`'s backend runs, trained on `model`."""
        if resolve(model, self.settings).kind == "openai":
            self._remote_check(model, ref)
            return ref
        adapter = self.adapters.servable(ref, caller)
        self._check(adapter, model)
        return adapter.ref

    def _check(self, adapter: AdapterVersion, model: str) -> None:
        if model in self._generators:
            raise InputError(f"{model} is registered in this process and takes no adapter")
        check_adapter(adapter, model, self._weights(model),
                      resolve(model, self.settings).backend)

    def _remote_check(self, model: str, ref: str) -> None:
        served = resolve(model, self.settings).adapters
        if ref not in served:
            raise NotFoundError(f"{model} serves no adapter {ref!r}",
                                hint="list the endpoint's adapters in alicerce.toml: "
                                     f"[models.{model}] adapters = [...]; now: "
                                     + (", ".join(served) or "none"))

    def _weights(self, name: str) -> str:
        """`name`'s identity without loading it."""
        if name in self._generators:
            return f"custom:{name}"
        if name not in self._identities:
            self._identities[name] = _identity(name, self.settings)
        return self._identities[name]
