"""Fuzz every route of the OpenAPI schema with schemathesis: no 5xx, no hang.

The server runs in-process with the hashing embedder and a scripted model, so thousands of
generated requests take seconds; what is fuzzed is the HTTP layer (parsing, validation,
routing, errors), which is the same for the real models."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from alicerce import Alicerce, Settings
from alicerce.server import create_app
from alicerce.testing.fakes import ScriptedGenerator

KEY: dict[str, str] = {}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    home = tmp_path_factory.mktemp("fuzz")
    docs = home / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Prazo\n\nEnvie os comprovantes em até 30 dias.\n")
    s = Settings.load(home=home / "h", embedder="hashing", abstain_below=0.0,
                      generator="fake", max_upload_mb=0.1)
    alc = Alicerce(s)
    alc.use_generator("fake", ScriptedGenerator("Em até 30 dias [1].", name="fake"))
    alc.ingest([docs], "kb")
    _, KEY["admin"] = alc.keys.create("fuzz", ["ask", "ingest", "admin"], rpm=10**6)
    application = create_app(s, alc)
    with TestClient(application) as client:  # runs the lifespan: the service exists
        # Fuzz only once the warm-up thread has loaded (and imported) everything: its
        # imports change sys.modules while hypothesis iterates over it, which fails
        # hypothesis itself ("dictionary changed size during iteration") when this module
        # runs first.
        deadline = time.time() + 300
        while client.get("/readyz").status_code != 200 and time.time() < deadline:
            time.sleep(0.2)
        yield application
    alc.close()


@pytest.fixture(scope="module")
def api(app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api")


@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_route_answers_5xx(case: schemathesis.Case) -> None:
    response = case.call(headers={"Authorization": f"Bearer {KEY['admin']}"})
    case.validate_response(response, checks=[not_a_server_error])


def test_the_fuzzer_reached_the_routes(app: FastAPI) -> None:
    """Guards the test above against passing vacuously (no requests made)."""
    samples = {(s.labels["route"], s.labels["status"]): s.value
               for m in app.state.service.metrics.requests.collect() for s in m.samples
               if s.name == "alicerce_requests_total"
               and s.labels["route"] != "/readyz"}  # the fixture's wait for readiness
    routes = {r for r, _ in samples}
    assert {"/v1/chat/completions", "/v1/apps/{app}/ask", "/v1/feedback"} <= routes
    assert sum(samples.values()) >= 13 * 10
    assert any(status.startswith("4") for _, status in samples)
    assert not any(status.startswith("5") for _, status in samples)
