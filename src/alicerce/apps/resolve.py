"""Resolving an app spec against a home: every name checked, every reference pinned, every
default filled, so the stored spec alone says exactly how the app answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from alicerce.apps.spec import AppSpec
from alicerce.chains.answerability import head_min
from alicerce.chains.resolve import ChainResolver, PinAdapter, folder_hash, stored
from alicerce.chains.transforms import Transform
from alicerce.config import Settings
from alicerce.errors import InputError, NotFoundError
from alicerce.generate.models import model_identity
from alicerce.generate.params import DecodingParams
from alicerce.prompts.registry import PromptRegistry
from alicerce.refs import split_ref
from alicerce.store.base import Store
from alicerce.tools.base import Tool


def resolve(spec: AppSpec, store: Store, prompts: PromptRegistry,
            settings: Settings, custom_models: set[str],
            transforms: Mapping[str, Transform] | None = None,
            tools: Mapping[str, Tool] | None = None,
            app_exists: Callable[[str], bool] | None = None,
            adapter: PinAdapter | None = None) -> dict[str, Any]:
    flow = spec.flow()
    if flow is not None:
        def pin(model: str) -> str:
            return (f"custom:{model}" if model in custom_models
                    else model_identity(model, settings))
        chain = ChainResolver(store, prompts, settings, pin, transforms or {}, tools,
                              app_exists, adapter)
        return {"name": spec.name, "description": spec.description,
                "use_case": spec.use_case.model_dump(), "kind": "chain",
                "chain": stored(chain.resolve(flow, spec.name))}
    collections = []
    for name in spec.collections:
        coll = store.collection(name)
        if coll is None:
            known = ", ".join(store.collection_names()) or "none yet"
            raise NotFoundError(f"app {spec.name!r}: no collection named {name!r}",
                                hint=f"ingest into it first; existing: {known}")
        collections.append({"name": name, "embedder": coll.embedder,
                            "chunking": dict(coll.chunking)})
    pname, at = split_ref(spec.prompt)
    try:
        pname, pversion = prompts.resolve(f"{pname}@{at}" if at else pname)
    except NotFoundError as exc:
        raise NotFoundError(f"app {spec.name!r}: {exc.message}", hint=exc.hint) from None
    template = prompts.get(f"{pname}@{pversion}")
    missing = {"question", "sources"} - set(template.variables)
    if missing:
        raise InputError(f"app {spec.name!r}: prompt {template.ref} does not use "
                         f"{', '.join(sorted(missing))}",
                         hint="an app's prompt renders the question and the numbered sources")
    model = spec.model or settings.generator
    identity = f"custom:{model}" if model in custom_models else model_identity(model, settings)
    pinned: dict[str, str] = {}
    if spec.adapter:
        if adapter is None:
            raise InputError(f"app {spec.name!r}: adapters cannot be used here",
                             hint="deploy the app in a home with its adapter")
        try:
            pinned["adapter"], pinned["adapter_identity"] = adapter(spec.adapter, model)
        except InputError as exc:
            raise type(exc)(f"app {spec.name!r}: adapter: {exc.message}",
                            hint=exc.hint) from None
    try:
        decoding = DecodingParams.build(**{"max_tokens": settings.max_tokens,
                                           "temperature": settings.temperature,
                                           **spec.decoding})
    except InputError as exc:
        raise InputError(f"app {spec.name!r}: decoding: {exc.message}", hint=exc.hint) from None
    if decoding.n != 1:
        raise InputError(f"app {spec.name!r}: decoding n must be 1", hint="leave n out")
    r = spec.retrieval
    rerank = _reranker(spec, prompts, settings, custom_models, model)
    return {
        "name": spec.name,
        "description": spec.description,
        "use_case": spec.use_case.model_dump(),
        "collections": collections,
        "retrieval": {
            "mode": r.mode or settings.search_mode,
            "alpha": settings.alpha if r.alpha is None else r.alpha,
            "k": r.k or settings.answer_k,
            "filters": r.filters,
            "reranker": r.reranker,
            "context_tokens": r.context_tokens or settings.answer_context_tokens,
            "select": r.select or settings.answer_select,
            "context_min": settings.answer_context_min if r.context_min is None
            else r.context_min,
            "window_drop": settings.answer_window_drop if r.window_drop is None
            else r.window_drop,
            "answerable_min": settings.answerable_min if r.answerable_min is None
            else r.answerable_min,
            "answerable_head_min": head_min(settings) if r.answerable_head_min is None
            else r.answerable_head_min,
            "abstain_below": settings.abstain_below if r.abstain_below is None
            else r.abstain_below,
            **rerank,
        },
        "prompt": f"{pname}@{pversion}",
        "model": {"name": model, "identity": identity, **pinned},
        "decoding": decoding.as_dict(),
        "extractiveness": spec.extractiveness or settings.extractiveness,
        # only when set, so the hash of an app that does not use it stays as it was
        **({"fusion": spec.fusion.model_dump()} if spec.fusion.mode != "prompt" else {}),
        "chain": list(spec.chain),
        "guards": dict(spec.guards),
        "cache": {"enabled": spec.cache.enabled,
                  "ttl_s": spec.cache.ttl_s or settings.cache_ttl_s},
    }


def _reranker(spec: AppSpec, prompts: PromptRegistry, settings: Settings,
              custom_models: set[str], app_model: str) -> dict[str, Any]:
    """The reranker's pinned identity: its model and prompt versions, or its folder's hash."""
    r = spec.retrieval
    if r.reranker == "none":
        return {}
    k = r.k or settings.answer_k
    out: dict[str, Any] = {"candidates": r.candidates or min(50, 3 * k)}
    if r.reranker == "llm":
        model = r.reranker_model or app_model
        pname, pversion = prompts.resolve("rerank-relevance")
        return {**out, "reranker_model": model, "reranker_prompt": f"{pname}@{pversion}",
                "reranker_identity": f"custom:{model}" if model in custom_models
                else model_identity(model, settings)}
    path = Path(r.reranker_path).expanduser()
    if not r.reranker_path or not (path / "config.json").is_file():
        raise InputError(f"app {spec.name!r}: retrieval.reranker_path "
                         f"{r.reranker_path or '(empty)'} is not a saved CrossEncoder",
                         hint="give the folder CrossEncoder.save() wrote")
    return {**out, "reranker_path": str(path.resolve()),
            "reranker_identity": folder_hash(path)}
