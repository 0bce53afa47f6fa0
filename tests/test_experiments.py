"""MLflow experiment tracking on the real MLflow: deployments and evaluations as runs in the
home's SQLite backend, and the same runs seen through a real `mlflow server` (the UI's API)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from alicerce import Alicerce, Settings
from alicerce.evaluate.retrieval import EvalQuery
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.testing.procs import free_port, wait_until_up

SPEC = "name: reembolso\ncollections: [kb]\nretrieval: {k: 3}\n"


def make(tmp_path: Path, docs: Path, **overrides: object) -> Alicerce:
    alc = Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", generator="fake",
                                 mlflow=True, **overrides))
    alc.use_generator("fake", ScriptedGenerator("ok", name="fake"))
    alc.ingest([docs], "kb")
    return alc


def test_deploys_and_evaluations_become_runs(tmp_path: Path, docs: Path) -> None:
    alc = make(tmp_path, docs)
    try:
        alc.deploy_app(SPEC, actor="ana")
        alc.deploy_app(SPEC)  # unchanged: no new version, no new run
        alc.deploy_app(SPEC.replace("k: 3", "k: 4"))
        report = alc.evaluate_retrieval("kb", [
            EvalQuery("Send receipts within how many days?", frozenset({"docs/refund.md"}))],
            k=3)
        assert alc.experiments is not None
        runs = alc.experiments.runs("alicerce/apps/reembolso")
        evals = alc.experiments.runs("alicerce/eval/kb")
        audit = {e.target: e.detail for e in alc.keys.audit_log() if e.action == "app.deploy"}
    finally:
        alc.close()
    assert [r["name"] for r in runs] == ["reembolso@2", "reembolso@1"]
    first = runs[1]
    assert first["params"]["retrieval.k"] == "3" and first["params"]["model.name"] == "fake"
    assert first["params"]["prompt"].startswith("rag-answer@")
    assert first["tags"]["alicerce.app_version"] == "1"
    assert first["tags"]["alicerce.created_by"] == "ana"
    assert audit["reembolso@1"]["mlflow_run"] == first["id"]  # the link both ways
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'h' / 'mlflow.db'}")
    files = {a.path for a in client.list_artifacts(first["id"])}
    assert files == {"spec.resolved.yaml", "spec.source.yaml"}
    [ev] = evals
    assert ev["metrics"]["hit_rate"] == report.metrics["hit_rate"]
    assert ev["params"]["collection"] == "kb" and ev["params"]["k"] == "3"


def test_an_unreachable_tracking_server_does_not_undo_the_deploy(
        tmp_path: Path, docs: Path) -> None:
    alc = make(tmp_path, docs, mlflow_tracking_uri=f"http://127.0.0.1:{free_port()}")
    try:
        import os

        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        version, created = alc.deploy_app(SPEC)
        assert created and alc.app("reembolso") == version
        [entry] = [e for e in alc.keys.audit_log() if e.action == "app.deploy"]
        assert entry.detail["mlflow_run"] is None
    finally:
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        alc.close()


@pytest.mark.real
def test_the_mlflow_ui_shows_the_runs(tmp_path: Path, docs: Path) -> None:
    """`mlflow server` on the home's backend: what a user opens in the browser."""
    alc = make(tmp_path, docs)
    try:
        alc.deploy_app(SPEC)
    finally:
        alc.close()
    port = free_port()
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).parent / "mlflow")
    db = (tmp_path / "h" / "mlflow.db").resolve()
    proc = subprocess.Popen([mlflow, "server", "--backend-store-uri", f"sqlite:///{db}",
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base + "/health", proc, timeout_s=120)
        with urllib.request.urlopen(base + "/", timeout=10) as r:
            assert "<html" in r.read().decode(errors="replace").lower()  # the UI itself

        def api(path: str, body: dict[str, object] | None = None) -> dict[str, object]:
            req = urllib.request.Request(base + "/api/2.0/mlflow/" + path,
                                         data=json.dumps(body).encode() if body else None,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())  # type: ignore[no-any-return]

        exp = api("experiments/get-by-name?experiment_name=alicerce/apps/reembolso")
        exp_id = exp["experiment"]["experiment_id"]  # type: ignore[index]
        runs = api("runs/search", {"experiment_ids": [exp_id]})["runs"]
        [run] = runs  # type: ignore[misc]
        assert run["info"]["run_name"] == "reembolso@1"
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["retrieval.k"] == "3"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
