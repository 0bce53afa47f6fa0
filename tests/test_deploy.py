"""The deployment files in deploy/ are valid for the tools that read them, offline: the
systemd unit by `systemd-analyze verify`, the Kubernetes manifests against Kubernetes' own
schemas (strict: an unknown field fails), and both start the server with options it has
and probe routes it serves. (nginx's file runs for real in test_replicas.py.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from alicerce import Alicerce, Settings
from alicerce.cli import app as cli
from alicerce.server import create_app

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
MANIFESTS = DEPLOY / "kubernetes" / "alicerce.yaml"


def serve_options() -> str:
    out = CliRunner().invoke(cli, ["serve", "--help"], terminal_width=200)
    assert out.exit_code == 0, out.output
    return out.output


def test_the_systemd_unit_verifies_and_starts_serve_with_real_options(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "alicerce@.service").read_text()
    exe = shutil.which("alicerce")
    assert exe, "the alicerce command is installed with the package"
    # verify checks that ExecStart's program exists: point it at this machine's
    (tmp_path / "alicerce@.service").write_text(
        unit.replace("/opt/alicerce/venv/bin/alicerce", exe))
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "alicerce@8001.service")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr  # warnings count as failures
    exec_start = next(x for x in unit.splitlines() if x.startswith("ExecStart="))
    options = serve_options()
    for flag in ("--host", "--port"):
        assert flag in exec_start and flag in options


def test_a_misspelt_unit_key_is_caught(tmp_path: Path) -> None:
    """The check above is not vacuous: verify reports what it ignores."""
    bad = (DEPLOY / "systemd" / "alicerce@.service").read_text().replace(
        "Restart=on-failure", "Restartt=on-failure").replace(
        "/opt/alicerce/venv/bin/alicerce", shutil.which("alicerce") or "/bin/true")
    (tmp_path / "alicerce@.service").write_text(bad)
    r = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "alicerce@8001.service")],
                       capture_output=True, text=True, timeout=60)
    assert "Restartt" in r.stderr


def _docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFESTS.read_text()) if d]


@pytest.mark.parametrize("version", ["1.35.0", "1.36.0", "1.37.0"])
def test_the_kubernetes_manifests_match_kubernetes_schemas(version: str) -> None:
    docs = _docs()
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "Secret"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_a_misspelt_manifest_field_is_caught() -> None:
    deployment = next(d for d in _docs() if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.37.0", strict=True)


def test_the_pods_run_serve_with_real_options_and_probe_real_routes(tmp_path: Path) -> None:
    deployment = next(d for d in _docs() if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[:2] == ["alicerce", "serve"]
    options = serve_options()
    assert all(a in options for a in args[2:] if a.startswith("--"))
    service = next(d for d in _docs() if d["kind"] == "Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    probes = {p: container[p]["httpGet"]["path"]
              for p in ("readinessProbe", "livenessProbe", "startupProbe")}
    with Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing")) as alc, \
            TestClient(create_app(alc.settings, alc)) as client:
        for probe, path in probes.items():  # no key needed, as a kubelet has none
            assert client.get(path).status_code in (200, 503), (probe, path)
        assert client.get("/no-such-probe").status_code == 404
    secret = next(d for d in _docs() if d["kind"] == "Secret")
    names = [*secret["stringData"], *(e["name"] for e in container["env"])]
    assert "ALICERCE_STORE" in names
    assert all(n.removeprefix("ALICERCE_").lower() in Settings.model_fields for n in names)
