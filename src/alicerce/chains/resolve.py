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
    AgentStep,
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
from alicerce.tools import registry as tools_registry
from alicerce.tools.base import Tool, check_name

# What a grounded step's prompt may use (it must use the question and the sources).
GROUNDED = {"question", "sources", "language", "extractiveness", "abstain"}
AGENT_VARIABLES = {"question", "tools", "language", "examples", "abstain"}
SEARCH_OPTIONS = {"collection", "k", "mode", "filters"}
# (adapter reference, the step's model) -> (NAME@N, the adapter's content hash), or an error
PinAdapter = Callable[[str, str], tuple[str, str]]


class ChainResolver:
    def __init__(self, store: Store, prompts: PromptRegistry, settings: Settings,
                 identity: Callable[[str], str],
                 transforms: Mapping[str, Transform],
                 tools: Mapping[str, Tool] | None = None,
                 app_exists: Callable[[str], bool] | None = None,
                 adapter: PinAdapter | None = None) -> None:
        self.store, self.prompts, self.settings = store, prompts, settings
        self.identity, self.transforms, self.adapter = identity, transforms, adapter
        self.tools, self.app_exists = tools or {}, app_exists or (lambda name: False)
        self.app = ""

    def resolve(self, chain: ChainSpec, app: str) -> ChainSpec:
        """The resolved chain; an InputError naming the app, step and field otherwise."""
        self.app = app
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
        if isinstance(s, AgentStep):
            return self._agent(s, where)
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
        pinned: dict[str, Any] = {}
        if s.adapter:
            if self.adapter is None:
                raise InputError(f"{where}: adapters cannot be used here",
                                 hint="deploy the app in a home with its adapter")
            try:
                pinned["adapter"], pinned["adapter_identity"] = self.adapter(s.adapter, model)
            except InputError as exc:
                raise type(exc)(f"{where}, adapter: {exc.message}", hint=exc.hint) from None
        return s.model_copy(update={"prompt": prompt, "model": model,
                                    "model_identity": self._identity(model, where),
                                    "decoding": decoding.as_dict(), **pinned})

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

    def _agent(self, s: AgentStep, where: str) -> AgentStep:
        model = s.model or self.settings.generator
        values = {"max_tokens": 768, "temperature": 0.0, **s.decoding}
        try:
            decoding = DecodingParams.build(**values)
        except InputError as exc:
            raise InputError(f"{where}, decoding: {exc.message}", hint=exc.hint) from None
        if decoding.n != 1 or decoding.format != "text":
            raise InputError(f"{where}, decoding: n and format are the agent's own",
                             hint="leave n and format out")
        tools, names = [], set()
        for i, t in enumerate(s.tools):
            spec = t.model_copy(update={"name": t.name or t.tool,
                                        "options": self._tool_options(t.tool, t.options,
                                                                      f"{where}, tools[{i}]")})
            try:
                check_name(spec.name)
            except InputError as exc:
                raise InputError(f"{where}, tools[{i}]: {exc.message}", hint=exc.hint) from None
            if spec.name in names:
                raise InputError(f"{where}, tools[{i}]: two tools are named {spec.name!r}",
                                 hint="give one of them another `name`")
            names.add(spec.name)
            tools.append(spec)
        return s.model_copy(update={
            "prompt": self._prompt(s.prompt, where, AGENT_VARIABLES,
                                   at_least={"question", "tools"}),
            "decide_prompt": (self._prompt(s.decide_prompt, where,
                                           {"question", "tools", "language"},
                                           at_least={"question", "tools"})
                              if s.decide else s.decide_prompt),
            "model": model, "model_identity": self._identity(model, where),
            "decoding": decoding.as_dict(), "tools": tools,
            "rails": self._rails("context", s.rails, where)})

    def _tool_options(self, kind: str, options: dict[str, Any], where: str
                      ) -> dict[str, Any]:
        """A tool's options checked (and paths made absolute) at deploy."""
        opts = dict(options)
        if kind == "search":
            value = opts.get("collection")
            names = value if isinstance(value, list) and value else [value]
            missing = [n for n in names
                       if not isinstance(n, str) or self.store.collection(n) is None]
            if missing:
                known = ", ".join(self.store.collection_names()) or "none yet"
                raise NotFoundError(f"{where}: search needs existing collections, got "
                                    f"{missing[0]!r}",
                                    hint=f"options: {{collection: NAME}} or {{collection: "
                                         f"[NAME, NAME]}}; existing: {known}")
            unknown = sorted(set(opts) - SEARCH_OPTIONS)
            k = opts.get("k", 4)
            if unknown or not isinstance(k, int) or not 1 <= k <= 20:
                raise InputError(f"{where}: search options: "
                                 + (f"unknown {', '.join(unknown)}" if unknown
                                    else f"k must be 1..20, got {k!r}"),
                                 hint="search takes: " + ", ".join(sorted(SEARCH_OPTIONS)))
            return opts
        if kind == "ask_app":
            target = opts.get("app")
            if set(opts) - {"app"} or not isinstance(target, str):
                raise InputError(f"{where}: ask_app takes options {{app: NAME}}",
                                 hint="name a deployed app")
            if split_ref(target)[0] == self.app:
                raise InputError(f"{where}: an agent cannot ask its own app {target!r}",
                                 hint="name another app")
            if not self.app_exists(target):
                raise NotFoundError(f"{where}: no deployed app {target!r} to ask",
                                    hint="deploy it first")
            return opts
        if kind == "sql" and isinstance(opts.get("path"), str):
            path = Path(opts["path"]).expanduser().resolve()
            home = self.settings.home.expanduser().resolve()
            if path == home or home in path.parents:
                raise InputError(f"{where}: sql cannot open files inside the Alicerce home "
                                 f"({home}): they hold keys, traces and other callers' data",
                                 hint="point it at your own database file")
            opts["path"] = str(path)
        try:
            tools_registry.build(kind, opts, self.tools)
        except InputError as exc:
            raise InputError(f"{where}: {exc.message}", hint=exc.hint) from None
        return opts

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
