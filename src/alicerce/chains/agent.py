"""The agent step: ReAct on grammar-constrained actions.

Each step the model writes `{"thought", "tool", "args"}`, its decoding constrained by a JSON
schema that is an `anyOf` of the declared tools (each with its typed arguments) and
`final_answer`: on llama.cpp every action parses and names a real tool. Other backends may
ignore the schema, so each action is still checked, and a bad one (not JSON, an unknown
tool, wrong arguments) goes back to the model as an observation saying what was wrong.

Small models pick tools when none is needed, invent names and repeat failing calls, so:
a first decision whether tools are needed at all; the same call with the same arguments
twice ends the loop; `max_steps`, a per-tool timeout and a total time budget bound it, and
when one ends it the model gets one last turn to answer from what it has (none when the
time is spent). Every observation passes the step's context rails before the model sees
it (an instruction planted in a document or a web page is an injection like any other);
search passages are numbered across the run so the answer cites them like a RAG answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from alicerce.chains.agent_tools import Nested, ToolRun, build_tools
from alicerce.chains.citations import attach, citations, is_abstention, reattribute
from alicerce.chains.grounded import passage
from alicerce.chains.spec import AgentStep, Trajectory
from alicerce.chains.state import RunState
from alicerce.generate.params import DecodingParams
from alicerce.guard.base import Context
from alicerce.guard.rails import Rails
from alicerce.language import detect
from alicerce.observe.spans import Recorder
from alicerce.prompts.builtin import ABSTAIN
from alicerce.tools.base import Observation, Tool, ToolFailed, cut, describe
from alicerce.types import Citation, Hit, Message

if TYPE_CHECKING:
    from alicerce.chains.plan import Node
    from alicerce.chains.runner import Host

FINAL = "final_answer"
# Bounded so every action closes within the step's max_tokens (768 by default): a reply
# cut by max_tokens is not JSON (qwen-1.5b once listed a month's dates until cut at 256).
THOUGHT_CHARS, ANSWER_CHARS = 400, 1500
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="alicerce-tool")
_TRAIL_CHARS = 600  # an observation as the step's `steps` output keeps it
_WORDS = {
    "pt": {"observation": "Observação", "error": "Erro", "none": "Nenhum resultado.",
           "blocked": "[resultado retirado: a proteção {rail} o bloqueou]",
           "loop": "Você já chamou {tool} com esses mesmos argumentos. Responda agora com "
                   "final_answer, usando o que já sabe.",
           "max_steps": "Acabaram os {n} passos. Responda agora com final_answer, usando o "
                        "que já sabe.",
           "budget": "Não consegui concluir dentro do tempo de {s:g} s.",
           "stuck": "Não cheguei a uma resposta: {why}.",
           "why_loop": "a mesma chamada se repetiu",
           "why_max_steps": "os {n} passos acabaram",
           "invalid": "A ação não é válida: {problem}. Responda com JSON: "
                      '{{"thought": "...", "tool": "nome", "args": {{...}}}}.',
           "unknown": "não há ferramenta {tool!r}; as ferramentas são: {names}",
           "not_json": "não é JSON ({msg}, no caractere {pos})",
           "no_tool": 'falta o nome da ferramenta em "tool"',
           "args_object": '"args" deve ser um objeto',
           "final_args": 'final_answer precisa de args {"answer": "..."}',
           "timeout": "{tool} não respondeu em {s:g} s"},
    "en": {"observation": "Observation", "error": "Error", "none": "No results.",
           "blocked": "[result withheld: the {rail} rail blocked it]",
           "loop": "You already called {tool} with these same arguments. Answer now with "
                   "final_answer, using what you know.",
           "max_steps": "The {n} steps are used up. Answer now with final_answer, using "
                        "what you know.",
           "budget": "I could not finish within the time budget of {s:g} s.",
           "stuck": "I could not reach an answer: {why}.",
           "why_loop": "the same call repeated",
           "why_max_steps": "the {n} steps ran out",
           "invalid": "The action is not valid: {problem}. Reply with JSON: "
                      '{{"thought": "...", "tool": "name", "args": {{...}}}}.',
           "unknown": "there is no tool {tool!r}; the tools are: {names}",
           "not_json": "not JSON ({msg} at character {pos})",
           "no_tool": 'no "tool" named',
           "args_object": '"args" must be an object',
           "final_args": 'final_answer needs args {"answer": "..."}',
           "timeout": "{tool} did not answer within {s:g} s"}}


@dataclass
class _Loop:
    """One agent run's working state."""

    s: AgentStep
    name: str  # span name prefix
    language: str
    tools: dict[str, Tool]
    deadline: float
    messages: list[Message]
    sources: list[Hit] = field(default_factory=list)
    trail: list[dict[str, Any]] = field(default_factory=list)
    calls: set[str] = field(default_factory=set)
    searched: bool = False
    actions: int = 0  # the model's action replies (the decision not counted)
    other_ok: bool = False  # a tool other than search gave a result

    def word(self, key: str, **kw: Any) -> str:
        return _WORDS[self.language][key].format(**kw)


class AgentSteps:
    def __init__(self, host: Host, rails: Callable[[str, Sequence[Any]], Rails],
                 nested: Nested, plugins: Callable[[], Mapping[str, Tool]]) -> None:
        self.host, self.rails, self.nested, self.plugins = host, rails, nested, plugins
        self._tools: dict[tuple[str, str], dict[str, Tool]] = {}
        self._params: dict[tuple[str, str, tuple[str, ...]], DecodingParams] = {}

    def tools(self, s: AgentStep, key: str) -> dict[str, Tool]:
        """The step's tools, built once per plan (an unnamed plan builds them each run)."""
        if not key:
            return build_tools(s, self.host, self.nested, self.plugins())
        if (key, s.id) not in self._tools:
            self._tools[(key, s.id)] = build_tools(s, self.host, self.nested, self.plugins())
        return self._tools[(key, s.id)]

    def run(self, node: Node, ins: Mapping[str, Any], state: RunState, rec: Recorder,
            key: str, prefix: str) -> dict[str, Any]:
        s = node.step
        assert isinstance(s, AgentStep)
        question = str(ins["question"])
        lang = (state.turn.language if state.turn else "") or detect(question)
        tools = self.tools(s, key)
        loop = _Loop(s, f"{prefix}{s.id}", lang if lang in _WORDS else "en", tools,
                     time.monotonic() + s.budget_s, [])
        use = self._decide(loop, question, state, rec, key) if s.decide else True
        template = self.host.prompts.get(s.prompt)
        loop.messages = list(template.render(
            question=question, tools=describe(tools), language=loop.language,
            examples=[_example(e) for e in s.examples], abstain=ABSTAIN[loop.language]))
        allowed = tools if use else {}
        status = ""
        answer: str | None = None
        for n in range(1, s.max_steps + 1):
            if time.monotonic() > loop.deadline:
                status = "budget"
                break
            action = self._think(loop, allowed, n, state, rec, key)
            if action is None:
                continue
            tool, args = action
            if tool == FINAL:
                answer, status = str(args.get("answer", "")), "answered" if use else "direct"
                break
            call = json.dumps([tool, args], sort_keys=True, ensure_ascii=False)
            if call in loop.calls:
                status = "loop"
                loop.messages.append(Message("user", loop.word("loop", tool=tool)))
                break
            loop.calls.add(call)
            self._act(loop, tool, args, n, state, rec)
        else:
            status = "max_steps"
            loop.messages.append(Message("user", loop.word("max_steps", n=s.max_steps)))
        if answer is None and status != "budget" and time.monotonic() < loop.deadline:
            action = self._think(loop, {}, s.max_steps + 1, state, rec, key)
            answer = str(action[1].get("answer", "")) if action else None
            if answer is not None and _echoes(answer, loop.messages[-2].content):
                answer = None  # a small model repeating our instruction is not an answer
        out = self._finish(loop, answer, status, rec)
        state.agents.append({
            "step": loop.name, "status": status, "steps": len(loop.trail),
            "tool_errors": sum(t["error"] for t in loop.trail if t["valid"]),
            "invalid": sum(not t["valid"] for t in loop.trail), "actions": loop.actions,
            "abstained": out["abstained"], "trail": loop.trail})
        return out

    # -- the model's turns ---------------------------------------------------------------
    def _decide(self, loop: _Loop, question: str, state: RunState, rec: Recorder,
                key: str) -> bool:
        gen = self.host.generator(loop.s.model)
        messages = self.host.prompts.get(loop.s.decide_prompt).render(
            question=question, tools=describe(loop.tools), language=loop.language)
        params = self._decoding(loop.s, key, ("decide",), DECIDE_SCHEMA, 16)
        with rec.span(f"{loop.name}.decide", model=gen.name) as span:
            done = gen.complete(messages, params)
            state.add(done.usage)
            try:
                use = json.loads(done.text).get("use_tools") is not False
            except (json.JSONDecodeError, AttributeError):
                use = True  # when in doubt, the tools are there
            span.update(use_tools=use, prompt_tokens=done.usage.prompt_tokens,
                        completion_tokens=done.usage.completion_tokens)
        return use

    def _think(self, loop: _Loop, allowed: Mapping[str, Tool], n: int, state: RunState,
               rec: Recorder, key: str) -> tuple[str, dict[str, Any]] | None:
        """One action, checked; a bad one is answered with what was wrong (None)."""
        gen = self.host.generator(loop.s.model)
        names = tuple(sorted(allowed))
        params = self._decoding(loop.s, key, names, action_schema(allowed), 0)
        with rec.span(f"{loop.name}.think", n=n, model=gen.name) as span:
            done = gen.complete(loop.messages, params)
            state.add(done.usage)
            text = done.text.strip()
            loop.actions += 1
            action, problem = parse_action(text, allowed, loop.language)
            span.update(prompt_tokens=done.usage.prompt_tokens,
                        completion_tokens=done.usage.completion_tokens,
                        valid=not problem)
            if action is not None:
                span.update(thought=action[2], tool=action[0], args=action[1])
            if problem:
                span["invalid"] = cut(f"{problem}: {text}", 1000)
        loop.messages.append(Message("assistant", text))
        if problem:
            loop.trail.append({"n": n, "thought": "", "tool": action[0] if action else "",
                               "args": action[1] if action else {}, "error": True,
                               "observation": problem, "valid": False})
            loop.messages.append(Message("user", loop.word("invalid", problem=problem)))
            return None
        assert action is not None
        return action[0], action[1]

    def _decoding(self, s: AgentStep, key: str, names: tuple[str, ...],
                  schema: dict[str, Any], max_tokens: int) -> DecodingParams:
        """JSON-constrained decoding for a set of allowed actions, built once per plan."""
        cache = (key, s.id, names)
        if key and cache in self._params:
            return self._params[cache]
        values = ({**s.decoding, "format": "json", "json_schema": schema} if s.constrained
                  else dict(s.decoding))
        if max_tokens:
            values["max_tokens"] = max_tokens
        params = DecodingParams.build(**values)
        if key:
            self._params[cache] = params
        return params

    # -- tools ---------------------------------------------------------------------------
    def _act(self, loop: _Loop, tool: str, args: dict[str, Any], n: int, state: RunState,
             rec: Recorder) -> None:
        t = loop.tools[tool]
        timeout = t.timeout_s or loop.s.tool_timeout_s
        t0 = time.perf_counter()
        with rec.span(f"{loop.name}.act", n=n, tool=tool, args=args) as span:
            error = False
            try:
                checked = t.check(args)
                run = ToolRun(rec, state, f"{loop.name}.act")
                left = max(0.1, min(timeout, loop.deadline - time.monotonic()))
                obs = _POOL.submit(t.call, checked, run).result(timeout=left)
                text = self._observed(loop, t, obs, state, span)
                loop.searched |= tool_kind(t) == "search"
                loop.other_ok |= tool_kind(t) != "search"
            except FutureTimeout:
                error, text = True, loop.word("timeout", tool=tool, s=timeout)
            except ToolFailed as exc:
                error, text = True, str(exc)
            except Exception as exc:  # a plugin's own bug is an observation, not a crash
                error, text = True, f"{type(exc).__name__}: {exc}"
            shown = f"{loop.word('error')}: {text}" if error else text
            span.update(observation=cut(shown), error=error)
        loop.trail.append({"n": n, "thought": _thought(loop.messages[-1].content), "tool": tool,
                           "args": args, "observation": cut(shown, _TRAIL_CHARS),
                           "error": error, "valid": True,
                           "ms": round((time.perf_counter() - t0) * 1000, 1)})
        loop.messages.append(Message("user", f"{loop.word('observation')}: {shown}"))

    def _observed(self, loop: _Loop, t: Tool, obs: Observation, state: RunState,
                  span: dict[str, Any]) -> str:
        """The observation after the context rails: passages screened one by one and
        numbered across the run; other text screened whole."""
        # computed here (a sum, a date) cannot carry anyone's instructions: not screened
        trusted = t.meta.get("trusted") is True
        rails = self.rails("context", loop.s.rails) if loop.s.rails and not trusted else None
        ctx = Context(language=loop.language)
        if tool_kind(t) != "search":
            text = cut(obs.text)
            if rails is None:
                return text
            out = rails.run(text, ctx)
            state.verdicts += [v.as_dict() for v in out.verdicts if v.action != "allow"]
            span["verdicts"] = [v.as_dict() for v in out.verdicts]
            state.redactions.update(out.mapping)
            return (loop.word("blocked", rail=out.blocked.rail) if out.blocked is not None
                    else out.text)
        lines, kept, dropped = [], [], []
        for h in obs.passages:
            if rails is not None:
                out = rails.run(h.text, ctx)
                state.verdicts += [dict(v.as_dict(), chunk_id=h.chunk_id)
                                   for v in out.verdicts if v.action != "allow"]
                if out.blocked is not None:
                    dropped.append(h.chunk_id)
                    continue
                h = replace(h, text=out.text)
            known = next((i for i, x in enumerate(loop.sources, 1)
                          if x.chunk_id == h.chunk_id), 0)
            if not known:
                loop.sources.append(h)
                known = len(loop.sources)
            kept.append(known)
            lines.append(f"[{known}] {h.title or h.doc_key}"
                         f"{' — ' + h.section if h.section else ''}\n{h.text}")
        span.update(passages=kept, dropped=dropped)
        return cut("\n\n".join(lines), 6000) if lines else loop.word("none")

    # -- the answer ----------------------------------------------------------------------
    def _finish(self, loop: _Loop, answer: str | None, status: str,
                rec: Recorder) -> dict[str, Any]:
        abstain = ABSTAIN[loop.language]
        cites: tuple[Citation, ...] = ()
        found_nothing = loop.searched and not loop.sources and not loop.other_ok
        with rec.span(f"{loop.name}.answer", status=status, raw=answer) as span:
            if answer is None:
                last = next((t["observation"] for t in reversed(loop.trail)
                             if not t["error"]), "")
                text = (loop.word("budget", s=loop.s.budget_s) if status == "budget" else
                        loop.word("stuck", why=loop.word(f"why_{status}",
                                                         n=loop.s.max_steps)))
                text = f"{text} {last}".strip() if last else text
                abstained = not last
            elif is_abstention(answer) or found_nothing:
                text, abstained = abstain, True
            else:
                text, cites = citations(attach(reattribute(answer, loop.sources),
                                               loop.sources), loop.sources)
                abstained = False
            span.update(text=text, abstained=abstained, cited=[c.n for c in cites],
                        steps=len(loop.trail))
        return {"text": text, "citations": [asdict(c) for c in cites], "abstained": abstained,
                "status": status, "steps": loop.trail,
                "sources": [passage(i, h) for i, h in enumerate(loop.sources, 1)]}


DECIDE_SCHEMA = {"type": "object", "properties": {"use_tools": {"type": "boolean"}},
                 "required": ["use_tools"], "additionalProperties": False}


def action_schema(tools: Mapping[str, Tool]) -> dict[str, Any]:
    """One of the tools with its typed arguments, or final_answer."""
    def one(name: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object",
                "properties": {"thought": {"type": "string", "maxLength": THOUGHT_CHARS},
                               "tool": {"const": name}, "args": args},
                "required": ["thought", "tool", "args"], "additionalProperties": False}
    final = {"type": "object",
             "properties": {"answer": {"type": "string", "maxLength": ANSWER_CHARS}},
             "required": ["answer"], "additionalProperties": False}
    options = [one(t.name, t.schema()) for t in tools.values()] + [one(FINAL, final)]
    return options[0] if len(options) == 1 else {"anyOf": options}


def parse_action(text: str, tools: Mapping[str, Tool], language: str = "en"
                 ) -> tuple[tuple[str, dict[str, Any], str] | None, str]:
    """(tool, args, thought) and "" when `text` is a valid action; else what is wrong, in
    the run's language (the model reads it)."""
    words = _WORDS[language if language in _WORDS else "en"]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, words["not_json"].format(msg=exc.msg, pos=exc.pos)
    if not isinstance(data, dict) or not isinstance(data.get("tool"), str):
        return None, words["no_tool"]
    tool, args = data["tool"], data.get("args", {})
    thought = str(data.get("thought", ""))
    if not isinstance(args, dict):
        return (tool, {}, thought), words["args_object"]
    if tool == FINAL:
        if not isinstance(args.get("answer"), str):
            return (tool, args, thought), words["final_args"]
        return (tool, args, thought), ""
    if tool not in tools:
        names = ", ".join([*tools, FINAL])
        return (tool, args, thought), words["unknown"].format(tool=tool, names=names)
    return (tool, args, thought), ""


def _echoes(answer: str, told: str) -> bool:
    """Whether an answer's first words mostly repeat the instruction it was given
    (qwen-0.5b answered "Você chamou search com esses mesmos argumentos." to the loop
    message)."""
    words = [w.strip(".,:;!?") for w in answer.lower().split()[:8]]
    known = {w.strip(".,:;!?") for w in told.lower().split()}
    return len(words) >= 4 and sum(w in known for w in words) >= 0.75 * len(words)


def tool_kind(t: Tool) -> str:
    return "search" if "collection" in t.meta else t.name


def _thought(action: str) -> str:
    try:
        return str(json.loads(action).get("thought", ""))
    except (json.JSONDecodeError, AttributeError):
        return ""


def _example(e: Trajectory) -> dict[str, Any]:
    return {"question": e.question,
            "steps": [{"action": json.dumps({"thought": x.thought, "tool": x.tool,
                                             "args": x.args}, ensure_ascii=False),
                       "observation": x.observation} for x in e.steps],
            "final": json.dumps({"thought": "", "tool": FINAL, "args": {"answer": e.answer}},
                                ensure_ascii=False)}
