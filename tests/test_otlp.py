"""Trace export over OTLP/HTTP to a real local receiver that decodes the protobuf requests
the way a collector does."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from alicerce import Alicerce, Settings
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.testing.procs import free_port

REPLY = "Envie os comprovantes em até 30 dias [1]."


class Receiver(ThreadingHTTPServer):
    """POST /v1/traces: keeps every span it is sent, as (span, resource attributes)."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.resources: list[dict[str, Any]] = []
        self.got = threading.Event()
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.path == "/v1/traces"
        assert self.headers["Content-Type"] == "application/x-protobuf"
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            self.server.resources.append({a.key: a.value.string_value
                                          for a in rs.resource.attributes})
            for ss in rs.scope_spans:
                self.server.spans.extend(ss.spans)
        self.server.got.set()
        out = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def make(tmp_path: Path, docs: Path, endpoint: str, **overrides: Any) -> Alicerce:
    alc = Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", abstain_below=0.0,
                                 generator="fake", otlp_endpoint=endpoint, **overrides))
    alc.use_generator("fake", ScriptedGenerator(REPLY, name="fake"))
    alc.ingest([docs], "kb")
    return alc


def attrs(span: Any) -> dict[str, Any]:
    out = {}
    for a in span.attributes:
        v = a.value
        out[a.key] = (v.string_value if v.HasField("string_value") else
                      v.int_value if v.HasField("int_value") else
                      v.double_value if v.HasField("double_value") else v.bool_value)
    return out


def test_each_trace_becomes_an_otel_trace_with_a_span_per_step(
        tmp_path: Path, docs: Path, receiver: Receiver) -> None:
    port = receiver.server_address[1]
    alc = make(tmp_path, docs, f"http://127.0.0.1:{port}/v1/traces")
    try:
        answer = alc.ask("Em quantos dias envio os comprovantes?", "kb")
        alc.traces.flush()
        assert alc.traces.export_to is not None and alc.traces.export_to.flush()
    finally:
        alc.close()
    assert receiver.got.wait(10)
    by_name = {s.name: s for s in receiver.spans}
    root = by_name["alicerce.request"]
    ra = attrs(root)
    assert ra["alicerce.trace_id"] == answer.trace_id and ra["alicerce.app"] == "kb"
    assert ra["alicerce.answer"] == answer.text
    assert ra["alicerce.lineage.collection"].startswith("kb@")
    for step in ("retrieve.sparse", "retrieve.dense", "fusion", "context", "prompt",
                 "generate", "citations"):
        span = by_name[step]
        assert span.trace_id == root.trace_id and span.parent_span_id == root.span_id
        assert root.start_time_unix_nano <= span.start_time_unix_nano
        assert span.end_time_unix_nano <= root.end_time_unix_nano + 1_000_000
    gen = attrs(by_name["generate"])
    assert gen["alicerce.model"] == "fake" and gen["alicerce.output"] == REPLY
    assert '"max_tokens"' in gen["alicerce.params"]
    assert receiver.resources[0]["service.name"] == "alicerce"


def test_redaction_applies_to_the_export(tmp_path: Path, docs: Path,
                                         receiver: Receiver) -> None:
    port = receiver.server_address[1]
    alc = make(tmp_path, docs, f"http://127.0.0.1:{port}/v1/traces", trace_redact=True)
    try:
        alc.ask("Em quantos dias envio os comprovantes?", "kb")
        alc.traces.flush()
        assert alc.traces.export_to is not None and alc.traces.export_to.flush()
    finally:
        alc.close()
    assert receiver.got.wait(10)
    sent = " ".join(str(attrs(s)) for s in receiver.spans)
    assert "comprovantes" not in sent and "[redacted]" in sent


def test_an_unreachable_collector_never_fails_a_request(tmp_path: Path, docs: Path) -> None:
    alc = make(tmp_path, docs, f"http://127.0.0.1:{free_port()}/v1/traces")
    try:
        answer = alc.ask("Em quantos dias envio os comprovantes?", "kb")
        assert answer.text == REPLY
        assert alc.traces.get(answer.trace_id).answer == REPLY  # the SQLite copy is there
        assert alc.traces.failed == 0
    finally:
        alc.close()
