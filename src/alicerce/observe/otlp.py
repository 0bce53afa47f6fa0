"""OpenTelemetry export of traces (OTLP over HTTP), for teams that already run a collector,
Jaeger, Tempo or a vendor backend.

Each stored trace becomes one OTel trace: a root span `alicerce.request` carrying the app,
version, caller, status and lineage, with one child span per step at its recorded offset.
The export runs on the trace writer's thread after the SQLite write, through the SDK's
batching exporter, so it adds nothing to a request; what the collector refuses is logged by
the SDK and never reaches the caller. Optional: `pip install 'alicerce[otel]'`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from alicerce.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

SERVICE = "alicerce"
AttrValue = str | bool | int | float


class OtlpExport:
    def __init__(self, endpoint: str, headers: dict[str, str] | None = None,
                 timeout_s: float = 10.0) -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            raise ConfigError("otlp_endpoint is set but OpenTelemetry is not installed",
                              hint="pip install 'alicerce[otel]', or unset otlp_endpoint") \
                from None
        from alicerce import __version__

        self.endpoint = endpoint
        self._provider: TracerProvider = TracerProvider(resource=Resource.create(
            {"service.name": SERVICE, "service.version": __version__}))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
            endpoint=endpoint, headers=headers or {}, timeout=timeout_s)))
        self._tracer = self._provider.get_tracer("alicerce.traces", __version__)

    def export(self, trace: dict[str, Any]) -> None:
        """One stored trace (the row as written: redacted already when redaction is on)."""
        from opentelemetry.trace import Status, StatusCode, set_span_in_context

        end_ns = int(trace["at"] * 1e9)
        start_ns = end_ns - int(trace["latency_ms"] * 1e6)
        root = self._tracer.start_span("alicerce.request", start_time=start_ns, attributes={
            "alicerce.trace_id": trace["id"], "alicerce.app": trace["app"],
            "alicerce.app_version": trace["app_version"] or 0,
            "alicerce.caller": trace["caller"], "alicerce.question": trace["question"],
            "alicerce.answer": trace["answer"], "alicerce.status": trace["status"],
            **_flat("alicerce.lineage", trace["lineage"])})
        if trace["status"] == "error":
            root.set_status(Status(StatusCode.ERROR, trace["error"]))
        ctx = set_span_in_context(root)
        for s in trace["spans"]:
            begin = start_ns + int(s["start_ms"] * 1e6)
            child = self._tracer.start_span(s["name"], context=ctx, start_time=begin,
                                            attributes=_flat("alicerce", s["attrs"]))
            if "error" in s["attrs"]:
                child.set_status(Status(StatusCode.ERROR, str(s["attrs"]["error"])))
            child.end(end_time=begin + int(s["ms"] * 1e6))
        root.end(end_time=end_ns)

    def flush(self, timeout_s: float = 10.0) -> bool:
        return bool(self._provider.force_flush(int(timeout_s * 1000)))

    def close(self) -> None:
        self._provider.shutdown()


def _flat(prefix: str, attrs: dict[str, Any]) -> dict[str, AttrValue | Sequence[str]]:
    """OTel attributes are scalars or lists of scalars: nested values become JSON text."""
    out: dict[str, AttrValue | Sequence[str]] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, str | bool | int | float):
            out[f"{prefix}.{key}"] = value
        else:
            out[f"{prefix}.{key}"] = json.dumps(value, ensure_ascii=False, default=str)
    return out
