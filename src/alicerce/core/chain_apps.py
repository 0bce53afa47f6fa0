"""Chain apps on a home: each version's plan compiled once, runs traced with lineage.

The CLI (`apps run`, `batch`), the HTTP routes and evaluation all come here, so a chain
runs the same way whoever asks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from alicerce.apps.registry import AppVersion
from alicerce.chains.plan import Plan, compile_chain, walk
from alicerce.chains.rag_plan import RagConfig, rag_chain
from alicerce.chains.runner import ChainResult, ChainRunner
from alicerce.chains.spec import ChainSpec, GenerateStep, RerankStep, RetrieveStep
from alicerce.chains.transforms import Transform
from alicerce.errors import AlicerceError, InputError, NotFoundError
from alicerce.observe.spans import Recorder
from alicerce.version import __version__

if TYPE_CHECKING:
    from alicerce.core.apps import AppRef
    from alicerce.platform import Alicerce

_QUESTION_CHARS = 2000


class ChainApps:
    def __init__(self, alc: Alicerce) -> None:
        self.alc = alc
        self.runner = ChainRunner(alc)
        self.transforms: dict[str, Transform] = {}  # use_transform's
        self._plans: dict[str, Plan] = {}
        self.compiled = 0  # plans compiled in this process (tests count it)

    def version(self, app: str | AppRef) -> AppVersion:
        """The chain app version `app` names now (labels read on every call)."""
        v = self.alc.resolve_app(app).version
        if v is None:
            raise NotFoundError(f"no app named {app!r}",
                                hint="deploy it with `alicerce apps deploy chain.yaml`")
        if v.spec.get("kind") != "chain":
            raise InputError(f"app {v.ref} answers questions from documents (a RAG app), "
                             "it has no declared inputs to run",
                             hint=f"ask it: alicerce ask {v.name} '...'")
        return v

    def plan(self, v: AppVersion) -> Plan:
        """The compiled plan of a version (a chain app's steps, or a RAG app's chain
        written out): built once per process, then shared."""
        if v.spec.get("kind") != "chain":
            return self.rag_plan(v, RagConfig.of(v.spec, "", self.alc.settings))
        if v.hash not in self._plans:
            spec = ChainSpec.model_validate(v.spec["chain"])
            self._plans[v.hash] = compile_chain(spec, self.transforms)
            self.compiled += 1
        return self._plans[v.hash]

    def rag_plan(self, v: AppVersion | None, config: RagConfig) -> Plan:
        """The plan of a RAG app version, or of a bare collection answered with the
        settings (`v` None), compiled once per process."""
        key = v.hash if v else f"collection:{config.collections[0]}"
        if key not in self._plans:
            self._plans[key] = compile_chain(rag_chain(config), self.transforms)
            self.compiled += 1
        return self._plans[key]

    def run(self, app: str | AppVersion, inputs: Mapping[str, Any], *,
            caller: str = "local", origin: str = "live") -> ChainResult:
        """One run of a chain app, traced (failures too, with the steps done so far)."""
        v = app if isinstance(app, AppVersion) else self.version(app)
        plan = self.plan(v)
        rec = Recorder()
        question = _question(inputs)
        try:
            result = self.runner.run(plan, inputs, rec, v.hash)
        except AlicerceError as exc:
            self.alc.traces.record(v.name, caller, question, error=str(exc), spans=rec.spans,
                                   lineage=self.lineage(v, plan), app_version=v.version,
                                   latency_ms=rec.elapsed_ms(), origin=origin)
            raise
        answer = {"answer": json.dumps(result.outputs, ensure_ascii=False),
                  "abstained": bool(result.blocked), "citations": []}
        tid = self.alc.traces.record(v.name, caller, question, answer=answer,
                                     spans=rec.spans, lineage=self.lineage(v, plan),
                                     app_version=v.version, latency_ms=result.latency_ms,
                                     origin=origin)
        return replace(result, trace_id=tid)

    def lineage(self, v: AppVersion, plan: Plan) -> dict[str, Any]:
        """What a run depended on: the app version and hash (the whole resolved chain),
        each step's model, weights and prompt version, each collection's version."""
        steps: dict[str, Any] = {}
        colls: dict[str, str] = {}
        adapters: list[str] = []
        for node in walk(plan.nodes):
            s = node.step
            if isinstance(s, GenerateStep | RerankStep):
                steps[s.id] = {"kind": s.kind, "model": s.model,
                               "model_identity": s.model_identity,
                               "prompt": s.prompt if isinstance(s, GenerateStep)
                               or s.reranker == "llm" else None}
                if isinstance(s, GenerateStep) and s.adapter:
                    steps[s.id].update(adapter=s.adapter, adapter_identity=s.adapter_identity)
                    adapters.append(s.adapter)
            if isinstance(s, RetrieveStep):
                for name in s.collections:
                    coll = self.alc.store.collection(name)
                    history = self.alc.store.versions(coll) if coll else []
                    colls[name] = f"{name}@{history[-1]['id'] if history else ''}"
        return {"app": v.ref, "app_hash": v.hash, "steps": steps,
                "collection": ",".join(colls.values()),
                "adapter": ",".join(dict.fromkeys(adapters)) or None,
                "software": f"alicerce {__version__}"}


def _question(inputs: Mapping[str, Any]) -> str:
    """What a trace shows as the question: the inputs as JSON, cut."""
    text = json.dumps(dict(inputs), ensure_ascii=False, default=str)
    return text if len(text) <= _QUESTION_CHARS else text[:_QUESTION_CHARS] + "…"
