"""Chain apps over HTTP: `POST /v1/apps/{app}/run` with declared inputs, chat completions
for chains with a chat interface (one text input), and batch jobs (`/v1/batches`). Runs
go through the same work queue as answers, so chains and questions share the model
slots fairly."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from alicerce.access.keys import ApiKey
from alicerce.apps.registry import AppVersion
from alicerce.batch.runner import text_inputs
from alicerce.chains.runner import ChainResult
from alicerce.errors import InputError
from alicerce.guard.base import REFUSE
from alicerce.language import detect
from alicerce.refs import split_ref
from alicerce.server import shapes
from alicerce.server.deps import Key, Svc
from alicerce.server.service import Service
from alicerce.server.wire import BatchRequest, RunRequest, RunResponse
from alicerce.types import Message

router = APIRouter()


@router.post("/v1/apps/{app}/run", response_model=RunResponse, tags=["apps"])
async def run(app: str, req: RunRequest, request: Request, svc: Svc,
              key: Key) -> dict[str, Any]:
    """Run a chain app on its declared inputs: its outputs, trace id, usage and time.
    `alicerce apps show APP --plan` (or the app's spec) lists the inputs it takes."""
    ref = svc.alc.resolve_app(app)  # looked up once for the whole request
    svc.admit(key, "ask", ref)
    version = svc.alc.chains.version(ref)
    request.state.app = version.name
    result = await _run(svc, key, version, req.inputs)
    return _body(version, result)


@router.post("/v1/batches", status_code=202, tags=["batches"])
async def create_batch(req: BatchRequest, request: Request, svc: Svc,
                       key: Key) -> dict[str, Any]:
    """Run a chain app over `rows` in the background; poll the job, then read its
    output (one JSON line per row, errors included)."""
    svc.admit(key, "ask", req.app)
    request.state.app = split_ref(req.app)[0]
    return svc.batches.start(key, req.app, req.rows, req.concurrency).as_dict()


@router.get("/v1/batches", tags=["batches"])
async def list_batches(svc: Svc, key: Key) -> dict[str, Any]:
    """The key's batch jobs (every job, for admin and read keys), newest first."""
    jobs = svc.alc.batches.list(key.owner)
    return {"object": "list", "data": [j.as_dict() for j in jobs]}


@router.get("/v1/batches/{job_id}", tags=["batches"])
async def get_batch(job_id: str, svc: Svc, key: Key) -> dict[str, Any]:
    return svc.batches.get(key, job_id).as_dict()


@router.post("/v1/batches/{job_id}/cancel", tags=["batches"])
async def cancel_batch(job_id: str, svc: Svc, key: Key) -> dict[str, Any]:
    """Stop after the rows running now; the output keeps what is done."""
    svc.batches.get(key, job_id, write=True)
    return svc.alc.batches.cancel(job_id).as_dict()


@router.get("/v1/batches/{job_id}/output", tags=["batches"])
async def batch_output(job_id: str, svc: Svc, key: Key) -> FileResponse:
    """The results so far: JSON lines `{row, custom_id, outputs, trace_id, error}`."""
    return FileResponse(svc.batches.output(key, job_id), media_type="application/jsonl")


async def _run(svc: Service, key: ApiKey, version: AppVersion,
               inputs: dict[str, Any]) -> ChainResult:
    result = await svc.work.call(lambda: svc.alc.chains.run(version, inputs, caller=key.id))
    svc.spend(key, version.name, result.usage.prompt_tokens, result.usage.completion_tokens)
    return result


def _body(version: AppVersion, r: ChainResult) -> dict[str, Any]:
    return {"app": version.name, "app_version": version.version, "outputs": r.outputs,
            "blocked": r.blocked or None, "trace_id": r.trace_id,
            "latency_ms": round(r.latency_ms, 3),
            "usage": shapes.usage_out({"prompt_tokens": r.usage.prompt_tokens,
                                       "completion_tokens": r.usage.completion_tokens})}


async def chat(svc: Service, key: ApiKey, version: AppVersion, messages: list[Message],
               stream: bool, usage_chunk: bool, shape: str) -> Any:
    """A chat completion from a chain with one text input: the last user message goes in;
    the `answer` output (or the only output, or all outputs as JSON) comes back."""
    app = version.name
    spec = svc.alc.chains.plan(version).spec
    texts = text_inputs(spec)
    required = [k for k, i in spec.inputs.items() if i.required and i.default is None]
    if len(texts) != 1 or set(required) - set(texts):
        raise InputError(f"app {version.ref} takes the inputs {', '.join(spec.inputs)}, "
                         "not a chat message",
                         hint=f"POST /v1/apps/{version.name}/run with {{\"inputs\": {{...}}}}")
    if not messages or messages[-1].role != "user":
        raise InputError("the last message must be the user's",
                         hint="end `messages` with {\"role\": \"user\", ...}")
    result = await _run(svc, key, version, {texts[0]: messages[-1].content})
    content = _content(result, messages[-1].content)
    finish = "content_filter" if result.blocked else "stop"
    usage = {"prompt_tokens": result.usage.prompt_tokens,
             "completion_tokens": result.usage.completion_tokens}
    extra = {"alicerce": {"outputs": result.outputs, "trace_id": result.trace_id,
                          "blocked": result.blocked or None, "answer": content,
                          **_shown(result.outputs)}}
    rid = shapes.rid(shape, result.trace_id)
    if not stream:
        return shapes.completion(rid, app, [(content, finish, None)], usage, shape) | extra

    async def chunks() -> Any:
        yield shapes.chunk(rid, app, "", shape, role=True)
        yield shapes.chunk(rid, app, content, shape)
        yield shapes.chunk(rid, app, None, shape, finish=finish) | extra
        if usage_chunk:
            yield shapes.usage_chunk(rid, app, usage, shape)
    return shapes.sse(chunks())


def _shown(outputs: dict[str, Any]) -> dict[str, list[Any]]:
    """What the chat page shows under an answer, in the RAG answer's shape: the
    `citations` and agent `steps` the app's outputs carry (only what its author exposed)."""
    out: dict[str, list[Any]] = {"citations": [], "steps": []}
    for key in out:
        value = outputs.get(key)
        if isinstance(value, list) and all(isinstance(x, dict) for x in value):
            out[key] = value
    return out


def _content(r: ChainResult, message: str) -> str:
    if r.blocked:
        return REFUSE[detect(message)]
    if isinstance(r.outputs.get("answer"), str):
        return str(r.outputs["answer"])
    if len(r.outputs) == 1:
        only = next(iter(r.outputs.values()))
        return only if isinstance(only, str) else json.dumps(only, ensure_ascii=False)
    return json.dumps(r.outputs, ensure_ascii=False)
