"""Tuning: rows checked with line numbers and versioned by content, settings refused before
any model loads, run records that survive a crash, and real PEFT training on SmolLM2-135M
(loss down, checkpoints resume, early stopping on a flat validation loss)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from alicerce import Alicerce, Settings
from alicerce.cli import app as cli
from alicerce.errors import InputError, NotFoundError
from alicerce.tune.config import TuneConfig
from alicerce.tune.data import load
from alicerce.tune.encode import IGNORE, encode
from alicerce.tune.registry import AdapterRegistry, Lineage, content_hash
from alicerce.tune.runs import TuneRuns

ROWS = [("Qual o prazo para enviar os comprovantes?", "São 30 dias corridos [1]."),
        ("Quantos dias de férias por ano?", "São 30 dias de férias por ano [1]."),
        ("Qual o tamanho mínimo da senha?", "A senha precisa de 14 caracteres [1]."),
        ("Posso trabalhar de casa?", "Sim, até três dias por semana [1]."),
        ("Quem aprova as despesas?", "O gestor direto aprova as despesas [1]."),
        ("Como peço um notebook novo?", "Abra um chamado no portal de TI [1]."),
        ("Qual o horário de trabalho?", "Das 9h às 18h, com uma hora de almoço [1]."),
        ("O vale-refeição é pago quando?", "No primeiro dia útil do mês [1].")]


def write_rows(path: Path, n: int = 24) -> Path:
    lines = []
    for i in range(n):
        q, a = ROWS[i % len(ROWS)]
        if i % 2:
            lines.append({"prompt": q, "completion": a})
        else:
            lines.append({"messages": [{"role": "system", "content": "Responda em português."},
                                       {"role": "user", "content": q},
                                       {"role": "assistant", "content": a}]})
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n",
                    encoding="utf-8")
    return path


def test_rows_load_in_both_shapes_and_the_version_is_the_content(tmp_path: Path) -> None:
    data = load(write_rows(tmp_path / "a.jsonl"))
    assert len(data.examples) == 24 and data.kind == "chat"
    assert data.examples[0].prompt[-1].content == ROWS[0][0]
    assert data.examples[1].prompt[0].role == "user"  # prompt/completion: one user turn
    # the same rows written differently are the same version; one change is a new one
    rows = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    (tmp_path / "b.jsonl").write_text("\n\n".join(json.dumps(r, indent=None,
                                                              separators=(", ", ": "))
                                                   for r in rows), encoding="utf-8")
    assert load(tmp_path / "b.jsonl").version == data.version
    rows[3]["completion"] = "Não."
    (tmp_path / "c.jsonl").write_text("\n".join(map(json.dumps, rows)), encoding="utf-8")
    assert load(tmp_path / "c.jsonl").version != data.version


def test_bad_rows_are_reported_with_their_lines_never_dropped(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text("\n".join([
        json.dumps({"prompt": "ok?", "completion": "sim"}),
        "{not json",
        json.dumps({"messages": [{"role": "user", "content": "só pergunta"}]}),
        json.dumps({"messages": [{"role": "user", "content": "q"},
                                 {"role": "assistant", "content": "  "}]}),
        json.dumps({"question": "x", "answer": "y"}),
        json.dumps({"messages": [{"role": "hacker", "content": "q"},
                                 {"role": "assistant", "content": "a"}]}),
    ]), encoding="utf-8")
    with pytest.raises(InputError) as err:
        load(p)
    msg = err.value.message
    assert msg.startswith("5 bad row(s)")
    for line in (2, 3, 4, 5, 6):
        assert f"line {line}:" in msg
    assert "line 1:" not in msg and "messages" in err.value.hint
    with pytest.raises(NotFoundError):
        load(tmp_path / "missing.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes('{"text": "ação"}'.encode("latin-1"))
    with pytest.raises(InputError, match="UTF-8"):
        load(tmp_path / "latin1.jsonl", "text")
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(InputError, match="no rows"):
        load(tmp_path / "empty.jsonl")


def test_a_dataset_too_small_for_its_validation_split_is_refused(tmp_path: Path) -> None:
    data = load(write_rows(tmp_path / "a.jsonl", n=4))
    with pytest.raises(InputError, match="too few for a validation split"):
        data.split(0.1, 0)
    train, held = data.split(0.25, 0)
    assert (len(train), len(held)) == (3, 1)
    assert data.split(0.25, 0) == (train, held)  # the seed fixes the split


def test_settings_out_of_range_are_refused_before_anything_loads() -> None:
    with pytest.raises(ValidationError, match="learning_rate"):
        TuneConfig(learning_rate=0)
    with pytest.raises(ValidationError, match="early stopping needs validation rows"):
        TuneConfig(eval_split=0.0)
    with pytest.raises(ValidationError, match="target_modules"):
        TuneConfig(target_modules=("q_proj", "x;rm -rf"))
    assert TuneConfig(eval_split=0.0, early_stopping_patience=0).eval_split == 0.0


def test_run_records_belong_to_their_caller_and_a_dead_run_reads_interrupted(
        tmp_path: Path) -> None:
    runs = TuneRuns(tmp_path / "db.sqlite")
    run = runs.start(caller="ana", name="rh", base="smollm2-135m", base_identity="sha256:x",
                     config=TuneConfig(), data="d.jsonl", data_version="v1", rows=(9, 1),
                     code_version="0")
    assert runs.get(run.id, "ana").state == "running"
    with pytest.raises(NotFoundError):
        runs.get(run.id, "bruno")  # another caller's run does not exist for them
    assert runs.list("bruno") == [] and [r.id for r in runs.list("admin")] == [run.id]
    runs._db.execute("UPDATE tune_runs SET pid=? WHERE id=?", (_dead_pid(), run.id))
    assert runs.get(run.id, "ana").state == "interrupted"
    assert runs.resume(run.id, "ana").state == "running"
    runs.finish(run.id, "done", {"steps": 3})
    with pytest.raises(InputError, match="is done"):
        runs.resume(run.id, "ana")
    runs.close()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_tuning_refuses_bad_input_before_loading_a_model(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "a.jsonl")
    with Alicerce(Settings.load(home=tmp_path / "h")) as alc:
        with pytest.raises(InputError, match="invalid tuning name"):
            alc.tune(data, name="../../etc")
        with pytest.raises(NotFoundError, match="unknown model"):
            alc.tune(data, name="x", base="gpt-17")
        with pytest.raises(InputError, match="too few"):
            alc.tune(write_rows(tmp_path / "b.jsonl", n=3), name="x")
        assert alc.tune_runs.list("admin") == []  # nothing started, nothing recorded
    out = CliRunner().invoke(cli, ["tune", "run", "--data", str(data), "--name", "x",
                                   "--lr", "-1", "--home", str(tmp_path / "h")])
    assert out.exit_code != 0 and "learning_rate" in str(out.exception or out.output)


def fake_adapter(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"r": 8}', encoding="utf-8")
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


LINEAGE = Lineage("smollm2-135m", "sha256:abc", "lora", "tune-1", "v1", {"lora_r": 8},
                  {"best_eval_loss": 2.5})


def test_adapters_are_immutable_versions_with_labels_rollback_and_owners(
        tmp_path: Path) -> None:
    reg = AdapterRegistry(tmp_path / "db.sqlite", tmp_path / "adapters")
    one = reg.register("rh-style", fake_adapter(tmp_path / "a", b"w1"), LINEAGE, "ana")
    again = reg.register("rh-style", fake_adapter(tmp_path / "b", b"w1"), LINEAGE, "ana")
    assert (one.ref, again.ref) == ("rh-style@1", "rh-style@1")  # same files, same version
    two = reg.register("rh-style", fake_adapter(tmp_path / "c", b"w2"), Lineage(
        **{**LINEAGE.__dict__, "metrics": {"best_eval_loss": 2.1}, "run_id": "tune-2"}), "ana")
    assert two.ref == "rh-style@2" and two.path != one.path
    assert (two.path / "adapter_model.safetensors").read_bytes() == b"w2"  # a copy
    assert content_hash(two.path) == two.hash
    # a bare name is the newest until production is set; labels move and roll back
    assert reg.get("rh-style", "ana").version == 2
    reg.label("rh-style@1", "production", "ana")
    reg.label("rh-style@2", "production", "ana")
    assert reg.get("rh-style", "ana").labels == ("production",)
    back, left = reg.rollback("rh-style", "production", "ana")
    assert (back.version, left) == (1, 2) and reg.get("rh-style", "ana").version == 1
    with pytest.raises(InputError, match="no older version"):
        reg.rollback("rh-style", "production", "ana")
    assert reg.diff("rh-style@1", "rh-style@2", "ana") == {
        "metrics.best_eval_loss": (2.5, 2.1), "run_id": ("tune-1", "tune-2")}
    # another caller sees nothing and cannot take the name
    assert reg.list("bruno") == [] and len(reg.list("admin")) == 2
    with pytest.raises(NotFoundError):
        reg.get("rh-style@1", "bruno")
    with pytest.raises(InputError, match="belongs to another caller"):
        reg.register("rh-style", fake_adapter(tmp_path / "d", b"w3"), LINEAGE, "bruno")
    with pytest.raises(InputError, match="invalid adapter name"):
        reg.register("../x", tmp_path / "a", LINEAGE, "ana")
    with pytest.raises(NotFoundError, match="no adapter"):
        reg.get("rh-style@9", "ana")
    reg.close()


def test_adapters_cli_lists_shows_labels_and_diffs(tmp_path: Path) -> None:
    home = tmp_path / "h"
    with Alicerce(Settings.load(home=home)) as alc:
        alc.adapters.register("rh", fake_adapter(tmp_path / "a", b"w1"), LINEAGE)
        alc.adapters.register("rh", fake_adapter(tmp_path / "b", b"w2"), Lineage(
            **{**LINEAGE.__dict__, "config": {"lora_r": 16}}))
    run = CliRunner()
    h = ["--home", str(home)]
    gated = run.invoke(cli, ["adapters", "label", "rh@2", "production", *h])
    assert gated.exit_code != 0 and "no training run" in str(gated.exception)  # no rows
    assert run.invoke(cli, ["adapters", "label", "rh@2", "production", "--no-gate",
                            *h]).exit_code == 0
    listed = run.invoke(cli, ["adapters", "list", *h]).output
    assert "rh@1" in listed and "rh@2" in listed and "production" in listed
    shown = json.loads(run.invoke(cli, ["adapters", "show", "rh@production", *h]).output)
    assert shown["version"] == 2 and shown["base_identity"] == "sha256:abc"
    assert "config.lora_r: 8 -> 16" in run.invoke(cli, ["adapters", "diff", "rh@1", "rh@2",
                                                         *h]).output
    missing = run.invoke(cli, ["adapters", "show", "nope", *h])
    assert missing.exit_code != 0


# -- real training on SmolLM2-135M -----------------------------------------------------------

needs_tune = pytest.mark.skipif(importlib.util.find_spec("peft") is None,
                                reason="the tune extra: pip install 'alicerce[tune]'")


@pytest.fixture(scope="module")
def smol() -> tuple[object, object]:
    from alicerce.generate.hf import load_base
    from alicerce.generate.models import model_path, resolve

    s = Settings.load()
    return load_base(model_path(resolve("smollm2-135m", s), s))


@pytest.mark.real
@needs_tune
def test_the_loss_is_on_the_answer_tokens_only(smol: tuple[object, object],
                                               tmp_path: Path) -> None:
    tok, _ = smol
    ex = load(write_rows(tmp_path / "a.jsonl", n=2)).examples[0]
    enc = encode(tok, ex, 512)
    answer = [t for t in enc.labels if t != IGNORE]
    assert enc.labels[0] == IGNORE and len(answer) < len(enc.ids)
    assert "30 dias corridos" in tok.decode(answer)  # type: ignore[attr-defined]
    assert ROWS[0][0] not in tok.decode(answer)  # type: ignore[attr-defined]
    short = encode(tok, ex, 24)
    assert len(short.ids) == 24 and short.truncated
    assert "30 dias" in tok.decode([t for t in short.labels if t != IGNORE])  # type: ignore[attr-defined]


@pytest.mark.real
@needs_tune
def test_lora_training_lowers_the_loss_and_records_the_run(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "a.jsonl", n=24)
    cfg = TuneConfig(epochs=3, batch_size=4, learning_rate=2e-3, log_every=3, eval_split=0.25,
                     max_seq_len=96, early_stopping_patience=0)
    with Alicerce(Settings.load(home=tmp_path / "h", mlflow=True)) as alc:
        run = alc.tune(data, name="rh-style", base="smollm2-135m", config=cfg)
    assert run.state == "done" and run.result["steps"] == run.result["total_steps"] == 15
    losses = [h["loss"] for h in run.history if "loss" in h]
    evals = [h["eval_loss"] for h in run.history if "eval_loss" in h]
    assert losses[-1] < losses[0] and evals[-1] < evals[0]
    assert all("eval_token_accuracy" in h for h in run.history if "eval_loss" in h)
    assert 0 < run.result["trainable_params"] < run.result["total_params"] / 100
    assert run.base_identity.startswith("sha256:") and run.rows_eval == 6
    # registered: an immutable version with its lineage; the run's checkpoints are gone
    assert run.result["adapter"] == "rh-style@1"
    with Alicerce(Settings.load(home=tmp_path / "h")) as alc:
        adapter = alc.adapters.get("rh-style")
    assert (adapter.path / "adapter_config.json").is_file()
    assert adapter.gguf is not None and run.result["gguf"] == "adapter.gguf"  # llama.cpp's form
    assert (adapter.base_identity, adapter.run_id, adapter.method) == (
        run.base_identity, run.id, "lora")
    assert adapter.data_version == load(data).version and adapter.config["lora_r"] == 8
    assert adapter.metrics["best_eval_loss"] == run.result["best_eval_loss"]
    assert not (tmp_path / "h" / "tune" / run.id).exists()
    # and in MLflow: the settings, and the loss curve on its step axis
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'h' / 'mlflow.db'}")
    logged = client.get_run(run.result["mlflow_run"])
    assert logged.data.params["lora_r"] == "8" and logged.data.tags["alicerce.kind"] == "tune"
    curve = client.get_metric_history(logged.info.run_id, "loss")
    assert [int(m.step) for m in curve] == [3, 6, 9, 12, 15]
    assert [m.value for m in curve] == losses
    # the CLI reads the same record back: the list, and the curve with the data version
    home = ["--home", str(tmp_path / "h")]
    listed = CliRunner().invoke(cli, ["tune", "list", *home])
    assert listed.exit_code == 0 and run.id in listed.output and "done" in listed.output
    shown = CliRunner().invoke(cli, ["tune", "show", run.id, "--json", *home])
    assert json.loads(shown.output)["data_version"] == load(data).version
    text = CliRunner().invoke(cli, ["tune", "show", run.id, *home]).output
    assert "step 15: " in text and "eval_loss" in text


@pytest.mark.real
@needs_tune
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "a.jsonl", n=24)
    home = tmp_path / "h"
    # a run killed (SIGKILL) after its second checkpoint
    script = f"""
import os, signal
from alicerce import Alicerce, Settings
from alicerce.tune.config import TuneConfig
def kill(step, total, logs):
    if step == 5:
        os.kill(os.getpid(), signal.SIGKILL)
with Alicerce(Settings.load(home={str(home)!r})) as alc:
    alc.tune({str(data)!r}, name="rh", base="smollm2-135m", progress=kill,
             config=TuneConfig(epochs=2, batch_size=4, log_every=2, eval_split=0.25,
                               max_seq_len=64, early_stopping_patience=0))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ}, timeout=600, check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    with Alicerce(Settings.load(home=home)) as alc:
        [run] = alc.tune_runs.list("local")
        assert run.state == "interrupted"
        done = alc.tune_resume(run.id)
    assert done.state == "done" and done.result["steps"] == 10
    # the curve before the checkpoint (step 4) is kept, the steps after it ran again
    assert [h["step"] for h in done.history if "loss" in h] == [2, 4, 6, 8, 10]
    data.write_text(data.read_text() + json.dumps({"prompt": "a", "completion": "b"}))
    with Alicerce(Settings.load(home=home)) as alc:
        alc.tune_runs.finish(run.id, "stopped", {})
        with pytest.raises(InputError, match="changed since"):
            alc.tune_resume(run.id)


@pytest.mark.real
@needs_tune
def test_early_stopping_fires_on_a_flat_validation_loss(tmp_path: Path) -> None:
    data = write_rows(tmp_path / "a.jsonl", n=16)
    cfg = TuneConfig(epochs=20, batch_size=4, learning_rate=1e-9, log_every=1,
                     eval_split=0.25, max_seq_len=64, early_stopping_patience=2,
                     early_stopping_threshold=0.01)
    with Alicerce(Settings.load(home=tmp_path / "h")) as alc:
        run = alc.tune(data, name="flat", base="smollm2-135m", config=cfg)
    assert run.result["stopped_early"] and run.result["steps"] == 3  # best at 1, then 2 flat


@pytest.mark.real
@needs_tune
@pytest.mark.parametrize("method", ["ia3", "prompt"])
def test_other_methods_train(tmp_path: Path, method: str) -> None:
    cfg = TuneConfig(method=method, epochs=1, batch_size=4, learning_rate=3e-2, log_every=2,
                     eval_split=0.25, max_seq_len=64, early_stopping_patience=0)
    with Alicerce(Settings.load(home=tmp_path / "h")) as alc:
        run = alc.tune(write_rows(tmp_path / "a.jsonl", n=16), name=method,
                       base="smollm2-135m", config=cfg)
    assert run.state == "done" and run.result["steps"] == 3
    assert 0 < run.result["trainable_params"] < 100_000
