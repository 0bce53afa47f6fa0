"""Apps: deploying and labelling versions, resolving a request's app, its rails and
decoding; chain apps run through the chain runner (chains/apps.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alicerce.apps.registry import AppVersion
from alicerce.apps.resolve import resolve as resolve_spec
from alicerce.apps.spec import parse as parse_spec
from alicerce.apps.spec import read as read_spec
from alicerce.chains.agent_tools import search_names
from alicerce.chains.plan import Plan, walk
from alicerce.chains.runner import ChainResult
from alicerce.chains.spec import AgentStep, RetrieveStep
from alicerce.chains.transforms import Transform
from alicerce.core.models import Models
from alicerce.errors import InputError, NotFoundError
from alicerce.generate.params import DecodingParams
from alicerce.guard.base import Context, Stage
from alicerce.guard.config import STAGES, Guards
from alicerce.guard.config import build as build_guards
from alicerce.guard.config import normalise as normalise_guards
from alicerce.guard.rails import Outcome, Rails
from alicerce.language import detect
from alicerce.prompts.template import PromptTemplate
from alicerce.refs import split_ref
from alicerce.tools.base import Tool, function_tool


@dataclass(frozen=True)
class AppRef:
    """An app as one request resolved it: the name it was asked for and the version that
    serves it (None: a bare collection answered with the defaults). Passed down instead of
    the name, so a request looks its app up once, and a label moving mid-request cannot
    give it two versions."""

    ref: str
    version: AppVersion | None

    @property
    def name(self) -> str:
        return self.version.name if self.version else self.ref


class Apps(Models):
    """Deployed apps: versions, labels, the app a request names, its rails."""

    def deploy_app(self, source: str | Path, actor: str = "local") -> tuple[AppVersion, bool]:
        """Validate and resolve an app spec (YAML text or file), store it as a version:
        (the version, whether it is new). The first version of a name becomes production."""
        text = read_spec(source) if isinstance(source, Path) else source
        spec = parse_spec(text, str(source) if isinstance(source, Path) else "app spec")
        resolved = resolve_spec(spec, self.store, self.prompts, self.settings,
                                set(self._generators), self.chains.transforms,
                                self.chains.runner.tools, lambda ref: self.app(ref) is not None,
                                lambda ref, model: self.pin_adapter(ref, model, actor))
        version, created = self.apps.deploy(resolved, text, actor)
        if created:
            detail = {"hash": version.hash, "mlflow_run": self.track(
                lambda ex: ex.log_deploy(version))}
            self.keys.audit(actor, "app.deploy", version.ref, detail)
        return version, created

    def label_prompt(self, ref: str, label: str, actor: str = "local") -> PromptTemplate:
        """Point a prompt label at a version (audited: it changes what apps answer with)."""
        prompt = self.prompts.label(ref, label, actor)
        self.keys.audit(actor, "prompt.label", prompt.ref, {"label": label})
        return prompt

    def label_app(self, ref: str, label: str,
                  actor: str = "local") -> tuple[AppVersion, int | None]:
        """Point `label` at a version: (the version, the one the label left, if any)."""
        version, old = self.apps.label(ref, label, actor)
        self.keys.audit(actor, "app.label", version.ref, {"label": label, "from": old})
        return version, old

    def rollback_app(self, name: str, label: str = "production",
                     actor: str = "local") -> tuple[AppVersion, int]:
        version, left = self.apps.rollback(name, label, actor)
        self.keys.audit(actor, "app.rollback", version.ref, {"label": label, "from": left})
        return version, left

    def app_names(self) -> list[str]:
        """Deployed apps, then collections no app of the same name shadows."""
        apps = sorted(self.apps.names())
        return apps + [c for c in self.store.collection_names() if c not in apps]

    def app(self, ref: str) -> AppVersion | None:
        """The app version `ref` serves now (labels read on every call, so a label move
        takes effect at once); None when no app of that name is deployed."""
        name, _ = split_ref(ref)
        if not self.apps.exists(name):
            if name != ref.strip():
                raise NotFoundError(f"no app named {name!r}",
                                    hint="deploy it with `alicerce apps deploy app.yaml`")
            return None
        key = self.apps.resolve(ref)
        if key not in self._app_cache:
            self._app_cache[key] = self.apps.get(f"{key[0]}@{key[1]}")
        return self._app_cache[key]

    def resolve_app(self, app: str | AppRef) -> AppRef:
        """The app a request names, looked up now (an AppRef is already resolved)."""
        return app if isinstance(app, AppRef) else AppRef(app, self.app(app))

    def rag_app(self, ref: str | AppRef) -> AppVersion | None:
        """`app`, refused when it is a chain app (it has declared inputs, not questions)."""
        version = self.resolve_app(ref).version
        if version is not None and version.spec.get("kind") == "chain":
            raise InputError(f"app {version.ref} is a chain with declared inputs "
                             f"({', '.join(version.spec['chain']['inputs'])}), not a "
                             "question-answering app",
                             hint=f"run it: alicerce apps run {version.name} --input "
                                  "'{...}', or POST /v1/apps/NAME/run")
        return version

    def app_collections(self, app: str | AppRef) -> list[str]:
        """The collections `app` answers from (a bare collection answers from itself; a
        chain app, those its retrieve steps search)."""
        ref = self.resolve_app(app)
        spec = ref.version
        if spec is not None and spec.spec.get("kind") == "chain":
            return list(dict.fromkeys(self._chain_collections(self.chains.plan(spec), 0)))
        if spec is not None:
            return [c["name"] for c in spec.spec["collections"]]
        return [self._collection(split_ref(ref.ref)[0]).name]

    def _chain_collections(self, plan: Plan, depth: int) -> list[str]:
        """What a chain reads: its retrieve steps' collections, its agents' searches', and
        those of the apps its agents ask (a key must be allowed every one of them)."""
        found: list[str] = []
        for n in walk(plan.nodes):
            if isinstance(n.step, RetrieveStep):
                found += n.step.collections
            if isinstance(n.step, AgentStep):
                for t in n.step.tools:
                    if t.tool == "search":
                        found += search_names(t.options)
                    elif t.tool == "ask_app" and depth < 3:
                        target = self.resolve_app(str(t.options["app"]))
                        found += (self._chain_collections(self.chains.plan(target.version),
                                                          depth + 1)
                                  if target.version is not None else ["(missing app)"])
        return found

    def app_plan(self, app: str) -> tuple[str, Plan]:
        """A deployed app's plan and its cache key (an agent's ask_app tool runs it)."""
        version = self.resolve_app(app).version
        if version is None:
            raise NotFoundError(f"no app named {app!r}", hint="deploy it first")
        return version.hash, self.chains.plan(version)

    def use_tool(self, tool: Tool | Callable[..., Any]) -> None:
        """Make a tool (or a typed function, described by its signature and docstring)
        available to agent steps in this process."""
        built = tool if isinstance(tool, Tool) else function_tool(tool)
        self.chains.runner.tools[built.name] = built

    def run_app(self, app: str, inputs: dict[str, Any], *, caller: str = "local",
                origin: str = "live") -> ChainResult:
        """Run a chain app on its declared inputs: its outputs, traced (docs/chains.md)."""
        return self.chains.run(app, inputs, caller=caller, origin=origin)

    def use_transform(self, transform: Transform) -> None:
        """Make a Python function callable from chains' transform steps in this process."""
        self.chains.transforms[transform.name] = transform

    def guards(self, version: AppVersion | None = None) -> Guards:
        """The rails of an app version, or the settings' for a bare collection (the
        runner's, built once and shared; their models load on first use)."""
        section = version.spec.get("guards", {}) if version else self.settings.guards
        rails = self.chains.runner.rails
        return Guards(*(rails(stage, section.get(stage, [])) for stage in STAGES))

    def warm_guards(self, app: str | None = None) -> None:
        """Load the models behind an app's rails (spaCy, the embedder, the heads) now, so
        the first request does not pay for it."""
        guards = self.guards(self.app(app) if app else None)
        ctx = Context(question="warm up", sources=("warm up",))
        for rails in (guards.input, guards.context, guards.output):
            rails.run("warm up", ctx, stop=False)

    def check(self, text: str, *, app: str | None = None, stage: Stage = "input",
              rails: Sequence[str] = ()) -> Outcome:
        """Every rail's verdict on `text` (not stopping at a block): the app's rails for
        `stage`, the settings' for a bare collection or none, or the named `rails` with
        their default options. Output rails that need sources (grounding) see none."""
        if not text.strip():
            raise InputError("nothing to check", hint="give a non-empty text")
        if rails:
            try:
                guards = build_guards(normalise_guards({stage: list(rails)}), self.settings)
            except ValueError as exc:
                raise InputError(f"bad rails: {exc}", hint="see docs/guardrails.md") from None
        else:
            guards = self.guards(self.app(app) if app else None)
        ctx = Context(question=text, language=detect(text), canary=self.canary)
        rails_of: Rails = getattr(guards, stage)
        return rails_of.run(text, ctx, stop=False)

    def decoding(self, params: DecodingParams | dict[str, Any] | None = None,
                 app: str | AppRef | None = None) -> DecodingParams:
        """Decoding parameters: the given ones over a deployed app's decoding, or over the
        settings' max_tokens and temperature."""
        if isinstance(params, DecodingParams):
            return params
        return self._decoding(params, self.rag_app(app) if app else None)
