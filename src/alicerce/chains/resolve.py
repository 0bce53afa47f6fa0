"""Resolving a chain against a home: prompts pinned to versions, models to their weights'
identity, decoding and retrieval defaults filled in, then the whole chain compiled (wiring
and types checked). What is stored is the resolved chain, so a version alone says exactly
what runs, and its hash changes when anything it depends on does."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from alicerce.chains.plan import compile_chain
from alicerce.chains.spec import (
    BranchStep,
    ChainSpec,
    CondenseStep,
    GenerateStep,
    GuardStep,
    MapStep,
    RerankStep,
    RetrieveStep,
    StepSpec,
)
from alicerce.chains.transforms import Transform
from alicerce.config import Settings
from alicerce.errors import InputError, NotFoundError
from alicerce.generate.params import DecodingParams
from alicerce.guard.config import normalise
from alicerce.prompts.registry import PromptRegistry
from alicerce.refs import split_ref
from alicerce.store.base import Store

# What a grounded step's prompt may use (it must use the question and the sources).
GROUNDED = {"question", "sources", "language", "extractiveness", "abstain"}


class ChainResolver:
    def __init__(self, store: Store, prompts: PromptRegistry, settings: Settings,
                 identity: Callable[[str], str],
                 transforms: Mapping[str, Transform]) -> None:
        self.store, self.prompts, self.settings = store, prompts, settings
        self.identity, self.transforms = identity, transforms

    def resolve(self, chain: ChainSpec, app: str) -> ChainSpec:
        """The resolved chain; an InputError naming the app, step and field otherwise."""
        try:
            resolved = chain.model_copy(update={"steps": self._steps(chain.steps)})
            compile_chain(resolved, self.transforms)
        except InputError as exc:
            raise type(exc)(f"app {app!r}: {exc.message}", hint=exc.hint) from None
        return resolved

    def _steps(self, steps: Sequence[StepSpec]) -> list[StepSpec]:
        return [self._step(s) for s in steps]

    def _step(self, s: StepSpec) -> StepSpec:
        where = f"step {s.id!r}"
        if isinstance(s, GenerateStep):
            return self._generate(s, where)
        if isinstance(s, RetrieveStep):
            for name in s.collections:
                if self.store.collection(name) is None:
                    known = ", ".join(self.store.collection_names()) or "none yet"
                    raise NotFoundError(f"{where}: no collection named {name!r}",
                                        hint=f"ingest into it first; existing: {known}")
            return s.model_copy(update={
                "mode": s.mode or self.settings.search_mode,
                "k": s.k or self.settings.answer_k,
                "alpha": self.settings.alpha if s.alpha is None else s.alpha,
                **({"step_back": self._prompt(s.step_back, where, {"input"}),
                    "model": s.model or self.settings.generator} if s.step_back else {})})
        if isinstance(s, RerankStep):
            return self._rerank(s, where)
        if isinstance(s, CondenseStep):
            return self._condense(s, where)
        if isinstance(s, GuardStep):
            rails = self._rails(s.stage, s.rails, where)
            if s.stage == "input" and "sources" in s.inputs:
                raise InputError(f"{where}, inputs.sources: input rails take no sources",
                                 hint="drop sources, or use stage: output")
            return s.model_copy(update={"rails": rails})
        if isinstance(s, MapStep):
            return s.model_copy(update={"steps": self._steps(s.steps)})
        if isinstance(s, BranchStep):
            return s.model_copy(update={"then": self._steps(s.then),
                                        "else_": self._steps(s.else_)})
        return s  # transform: checked when compiled

    def _generate(self, s: GenerateStep, where: str) -> GenerateStep:
        if s.grounded is not None and s.output is not None:
            raise InputError(f"{where}: a grounded step answers in text with citations",
                             hint="drop output (JSON), or grounded")
        prompt = (self._prompt(s.prompt, where, GROUNDED, at_least={"question", "sources"})
                  if s.grounded is not None else self._prompt(s.prompt, where, set(s.inputs)))
        model = s.model or self.settings.generator
        values = {"max_tokens": self.settings.max_tokens,
                  "temperature": self.settings.temperature, **s.decoding}
        if s.output is not None:
            values.update(format="json", json_schema=s.output.schema_)
        try:
            decoding = DecodingParams.build(**values)
        except InputError as exc:
            raise InputError(f"{where}, decoding: {exc.message}", hint=exc.hint) from None
        if decoding.n != 1:
            raise InputError(f"{where}, decoding: n must be 1", hint="leave n out")
        return s.model_copy(update={"prompt": prompt, "model": model,
                                    "model_identity": self._identity(model, where),
                                    "decoding": decoding.as_dict()})

    def _rerank(self, s: RerankStep, where: str) -> RerankStep:
        if s.reranker == "llm":
            model = s.model or self.settings.generator
            prompt = self._prompt(s.prompt, where, {"query", "passage"})
            return s.model_copy(update={"model": model, "prompt": prompt,
                                        "model_identity": self._identity(model, where)})
        if s.reranker == "cross-encoder":
            path = Path(s.path).expanduser()
            if not s.path or not (path / "config.json").is_file():
                raise InputError(f"{where}, path: {s.path or '(empty)'} is not a saved "
                                 "CrossEncoder (no config.json there)",
                                 hint="give the folder CrossEncoder.save() wrote")
            return s.model_copy(update={"path": str(path.resolve()),
                                        "model_identity": folder_hash(path)})
        return s

    def _condense(self, s: CondenseStep, where: str) -> CondenseStep:
        model = s.model or self.settings.generator
        return s.model_copy(update={
            "prompt": self._prompt(s.prompt, where, {"history", "question", "language"},
                                   at_least={"history", "question"}),
            "model": model, "rails": self._rails("input", s.rails, where)})

    def _rails(self, stage: str, rails: list[Any], where: str) -> list[Any]:
        try:
            return list(normalise({stage: rails})[stage]) if rails else []
        except ValueError as exc:
            raise InputError(f"{where}, rails: {exc}",
                             hint="see docs/guardrails.md for rails and stages") from None

    def _prompt(self, ref: str, where: str, variables: set[str],
                at_least: set[str] | None = None) -> str:
        """The pinned `name@version`; its variables must be exactly `variables`, or, with
        `at_least`, include those and stay within `variables`."""
        name, at = split_ref(ref)
        try:
            pname, version = self.prompts.resolve(f"{name}@{at}" if at else name)
        except NotFoundError as exc:
            raise NotFoundError(f"{where}: {exc.message}", hint=exc.hint) from None
        template = self.prompts.get(f"{pname}@{version}")
        want = set(template.variables)
        if at_least is not None:
            missing, unknown = sorted(at_least - want), sorted(want - variables)
        else:
            missing, unknown = sorted(want - variables), sorted(variables - want)
        if missing or unknown:
            raise InputError(
                f"{where}: prompt {template.ref} " + "; ".join(
                    ([f"uses {', '.join(missing)}, not mapped in inputs"] if missing else [])
                    + ([f"does not use {', '.join(unknown)}"] if unknown else [])),
                hint="map exactly the prompt's variables: " + (", ".join(sorted(want))
                                                                or "none"))
        return template.ref

    def _identity(self, model: str, where: str) -> str:
        try:
            return self.identity(model)
        except InputError as exc:
            raise type(exc)(f"{where}, model: {exc.message}", hint=exc.hint) from None


def folder_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f.relative_to(path).as_posix().encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def stored(chain: ChainSpec) -> dict[str, Any]:
    """A resolved chain as the registry stores it (JSON, aliases as written in YAML)."""
    return chain.model_dump(mode="json", by_alias=True)
