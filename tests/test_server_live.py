"""A live `alicerce serve` (real e5 embedder, real SmolLM2 on llama.cpp) driven by the real
openai SDK and a real headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from alicerce.testing.procs import serving

pytestmark = pytest.mark.real
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_GENERATOR": "smollm2-135m",
            "ALICERCE_ABSTAIN_BELOW": "0", "ALICERCE_LLM_CONTEXT": "2048",
            "ALICERCE_LLM_PARALLEL": "1", "ALICERCE_QUEUE_SIZE": "0",
            "ALICERCE_MAX_TOKENS": "48"}


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alicerce", *args], capture_output=True,
                          text=True, env=env_for(home), timeout=300)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("live") / "h"


@pytest.fixture(scope="module")
def live(home: Path) -> Iterator[tuple[str, str, str]]:
    """(base URL, a key for every scope, a key limited to `other`)."""
    docs = home.parent / "docs"
    docs.mkdir()
    (docs / "refund.md").write_text("# Refund policy\n\nSend receipts within 30 days.\n")
    (docs / "wifi.md").write_text("# Wi-Fi\n\nAsk reception for the guest code.\n")
    assert cli(home, "ingest", str(docs), "-c", "kb").returncode == 0
    assert cli(home, "ingest", str(docs / "wifi.md"), "-c", "other").returncode == 0
    admin = cli(home, "keys", "create", "--name", "admin", "--scopes", "ask,ingest,admin")
    limited = cli(home, "keys", "create", "--name", "o", "--collections", "other")
    assert admin.returncode == 0 and limited.returncode == 0, admin.stderr
    with serving(env_for(home), home.parent / "server.log") as (base, _):
        yield base, admin.stdout.strip(), limited.stdout.strip()


def client(base: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)


QUESTION = [{"role": "user", "content": "How long do I have to send receipts?"}]


def test_sdk_chat_with_an_app_streaming_and_not(live: tuple[str, str, str]) -> None:
    base, key, _ = live
    c = client(base, key)
    done = c.chat.completions.create(model="kb", messages=QUESTION, temperature=0,
                                     max_tokens=40)
    assert done.choices[0].message.content
    extra = done.model_extra["alicerce"]  # type: ignore[index]
    assert extra["trace_id"] and extra["versions"]["model"] == "smollm2-135m"
    assert done.usage is not None and done.usage.completion_tokens > 0
    pieces, final = [], None
    for chunk in c.chat.completions.create(model="kb", messages=QUESTION, stream=True,
                                           temperature=0, max_tokens=40,
                                           extra_headers={"Cache-Control": "no-cache"}):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if (chunk.model_extra or {}).get("alicerce"):
            final = chunk.model_extra["alicerce"]  # type: ignore[index]
    assert "".join(pieces).strip() and final is not None
    assert final["trace_id"] != extra["trace_id"]
    cached = c.chat.completions.create(model="kb", messages=QUESTION, temperature=0,
                                       max_tokens=40)
    assert cached.model_extra["alicerce"]["cached"]  # type: ignore[index]


def test_sdk_raw_model_parameters_and_embeddings(live: tuple[str, str, str]) -> None:
    base, key, _ = live
    c = client(base, key)
    out = c.chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8, temperature=0.7, top_p=0.9, seed=3, logprobs=True, top_logprobs=2,
        stop=["\n\n"], extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1})
    lp = out.choices[0].logprobs
    assert lp is not None and lp.content and len(lp.content[0].top_logprobs) == 2
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}},
              "required": ["ok"], "additionalProperties": False}
    js = c.chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "Reply ok as JSON."}],
        max_tokens=24, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}})
    assert isinstance(json.loads(js.choices[0].message.content or "")["ok"], bool)
    text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(
        model="smollm2-135m", messages=[{"role": "user", "content": "Count to three."}],
        max_tokens=12, stream=True) if ch.choices)
    assert text
    emb = c.embeddings.create(model="e5-small", input=["recibos", "Wi-Fi"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 384
    models = {m.id for m in c.models.list()}
    assert {"kb", "other", "smollm2-135m", "e5-small"} <= models


def test_sdk_errors(live: tuple[str, str, str]) -> None:
    base, key, limited = live
    with pytest.raises(openai.AuthenticationError):
        client(base, "alc-0-bad").models.list()
    with pytest.raises(openai.NotFoundError):
        client(base, key).chat.completions.create(model="nope", messages=QUESTION)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client(base, key).chat.completions.create(model="kb", messages=QUESTION,
                                                  temperature=-1)
    with pytest.raises(openai.PermissionDeniedError):
        client(base, limited).chat.completions.create(model="kb", messages=QUESTION)


def test_full_queue_is_503_and_a_hung_up_stream_frees_its_slot(
        live: tuple[str, str, str]) -> None:
    base, key, _ = live
    c = client(base, key)
    long = {"model": "smollm2-135m", "max_tokens": 400, "temperature": 0.8, "stream": True,
            "messages": [{"role": "user", "content": "Write a long story about a cat."}]}
    stream = c.chat.completions.create(**long)  # type: ignore[call-overload]
    next(iter(stream))  # running: the only slot is taken, and nothing may wait
    with pytest.raises(openai.InternalServerError) as busy:
        c.chat.completions.create(model="smollm2-135m", messages=QUESTION, max_tokens=4)
    assert busy.value.status_code == 503
    assert int(busy.value.response.headers["Retry-After"]) >= 1
    stream.close()  # the client hangs up mid-stream
    deadline = time.time() + 30
    while True:
        try:
            out = c.chat.completions.create(model="smollm2-135m", messages=QUESTION,
                                            max_tokens=4)
            break
        except openai.InternalServerError:
            assert time.time() < deadline, "the slot was never freed"
            time.sleep(0.2)
    assert out.choices[0].message.content is not None
    metrics = urllib.request.urlopen(base + "/metrics").read().decode()
    assert 'alicerce_requests_total{app="smollm2-135m",route="/v1/chat/completions",' \
           'status="503"}' in metrics
    assert "alicerce_time_to_first_token_seconds_count" in metrics


def open_chat(pw: Any, base: str, key: str, app: str) -> tuple[Any, Any]:
    """Chromium on the chat page, signed in with `key`, `app` chosen."""
    assert CHROMIUM, "the browser test needs Debian's chromium: apt install chromium"
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
    page = browser.new_page()
    page.goto(base + "/")
    page.fill("#key", key)
    page.dispatch_event("#key", "change")
    page.wait_for_function(f"[...document.querySelectorAll('#app option')]"
                           f".some((o) => o.value === {json.dumps(app)})")
    page.select_option("#app", app)
    return browser, page


def test_chat_page_in_a_real_browser(live: tuple[str, str, str], home: Path) -> None:
    from playwright.sync_api import sync_playwright

    base, key, _ = live
    with sync_playwright() as pw:
        browser, page = open_chat(pw, base, key, "kb")
        page.fill("#question", "How long do I have to send receipts?")
        page.click("#send")
        # the user sees work going on until the first words (issue 16 item 12)
        page.wait_for_selector(".turn .working", state="attached", timeout=10_000)
        assert page.inner_text("#send") == "Respondendo…"
        page.wait_for_selector(".thumbs button", timeout=120_000)
        assert page.locator(".working").count() == 0 and page.inner_text("#send") == "Enviar"
        assert page.inner_text(".turn .a").strip()
        sources = page.locator(".sources li").all_inner_texts()
        assert not sources or any("Refund" in s or "Wi-Fi" in s for s in sources)
        with page.expect_response("**/v1/feedback") as fb:
            page.click("button[aria-label='thumbs up']")
        assert fb.value.status == 200
        page.wait_for_selector("button.done")
        page.click(".rate summary")
        page.select_option(".rate select", "4")
        page.fill(".rate textarea", "Faltou citar a política.")
        with page.expect_response("**/v1/feedback") as fb:
            page.click(".rate button")
        assert fb.value.status == 200
        trace_id = page.inner_text(".rate .trace").removeprefix("trace ").strip()
        # "why this answer?": the sources and sentences it rests on, with a working state
        page.click(".why-button")
        page.wait_for_selector(".why .working", state="attached", timeout=10_000)
        page.wait_for_selector(".why-panel", timeout=240_000)
        shown_sources = page.locator(".why-sources li").all_inner_texts()
        assert shown_sources and all(s.startswith("[") for s in shown_sources), shown_sources
        assert "calls" in page.inner_text(".why-cost")
        # the API reference renders offline: every request stays on this server
        docs = browser.new_page()
        asked: list[str] = []
        docs.on("request", lambda r: asked.append(r.url))
        docs.goto(base + "/docs")
        docs.wait_for_selector(".swagger-ui .info .title", timeout=30_000)
        assert "Alicerce" in docs.inner_text(".swagger-ui .info .title")
        assert asked and all(u.startswith(base) for u in asked), asked
        icon = docs.request.get(base + "/favicon.ico")
        assert icon.status == 200 and "svg" in icon.headers["content-type"]
        browser.close()
    # What the page sent is what an operator finds from the command line.
    listed = cli(home, "traces", "list", "--app", "kb", "--feedback", "up", "--json")
    assert trace_id in [t["id"] for t in json.loads(listed.stdout)], listed.stderr
    shown = json.loads(cli(home, "traces", "show", trace_id, "--json").stdout)
    ratings = [(f["score"], f["rating"], f["comment"]) for f in shown["feedback"]]
    assert ratings == [(1, None, ""), (0, 4, "Faltou citar a política.")]
    why = json.loads(cli(home, "explain", trace_id, "--budget", "16", "--json").stdout)
    assert len(why["sources"]) == len(shown_sources)  # the kept explanation the page showed
    names = [s["name"] for s in shown["spans"]]  # the default rails ran around the answer
    assert names[0] == "input_guards" and "context_guards" in names
    assert names[-3:] == ["generate", "citations", "output_guards"]


AGENT = """name: calculista
inputs: {question: string}
outputs: {answer: $agent.text, steps: $agent.steps}
steps:
  - id: agent
    kind: agent
    inputs: {question: $inputs.question}
    tools: [calculator]
    decide: false
    max_steps: 2
    decoding: {max_tokens: 256}
"""


def test_an_agents_steps_fold_under_its_answer_on_the_chat_page(
        live: tuple[str, str, str], home: Path) -> None:
    from playwright.sync_api import sync_playwright

    base, key, _ = live
    spec = home.parent / "agent.yaml"
    spec.write_text(AGENT)
    deployed = cli(home, "apps", "deploy", str(spec))
    assert deployed.returncode == 0, deployed.stderr
    with sync_playwright() as pw:
        browser, page = open_chat(pw, base, key, "calculista")
        page.fill("#question", "Quanto é 1234 * 5678? Use a calculadora.")
        page.click("#send")
        page.wait_for_selector(".thumbs button", timeout=180_000)
        answer = page.inner_text(".turn .a").strip()
        assert answer and answer != "undefined"
        # (text_content: the rating form is folded, so its text is not rendered)
        trace_id = (page.text_content(".rate .trace") or "").removeprefix("trace ").strip()
        for _ in range(40):  # the server writes traces in the background
            got = cli(home, "traces", "show", trace_id, "--json")
            if got.returncode == 0:
                break
            time.sleep(0.5)
        assert got.returncode == 0, got.stderr
        shown = json.loads(got.stdout)
        acts = [s["attrs"] for s in shown["spans"] if s["name"] == "agent.act"]
        invalid = [s for s in shown["spans"] if s["name"] == "agent.think"
                   and s["attrs"].get("valid") is False]
        # every step the agent took (a call, or an action it got wrong) is on the page,
        # folded: closed until the user opens it
        steps = len(acts) + len(invalid)
        assert page.locator(".turn .step").count() == steps
        # (SmolLM2 at temperature 0 took 3 steps here; an answer without steps has no fold)
        assert page.locator(".turn .steps").count() == (1 if steps else 0)
        if steps:
            assert not page.locator(".turn .step .call").first.is_visible()
            page.click(".turn .steps summary")
            shown_steps = page.inner_text(".turn .steps")
            for a in acts:
                assert a["tool"] in shown_steps and str(a["observation"])[:40] in shown_steps
            for t in invalid:  # an action the model got wrong shows what was wrong with it
                assert t["attrs"]["invalid"].split(": ", 1)[0] in shown_steps
        browser.close()


def test_a_label_move_changes_what_the_running_server_serves(
        live: tuple[str, str, str], home: Path) -> None:
    """Deploy and label from another process (the CLI) while the server runs: the next
    request answers with the newly labelled version, no restart."""
    base, key, limited = live
    spec = home.parent / "app.yaml"
    spec.write_text("name: recibos\ncollections: [kb]\ndecoding: {max_tokens: 24}\n")
    assert cli(home, "apps", "deploy", str(spec)).returncode == 0
    spec.write_text("name: recibos\ncollections: [kb]\ndecoding: {max_tokens: 12}\n"
                    "retrieval: {k: 2}\n")
    assert cli(home, "apps", "deploy", str(spec)).returncode == 0
    c = client(base, key)

    def ask() -> dict[str, object]:
        out = c.chat.completions.create(model="recibos", messages=QUESTION, temperature=0)
        assert out.usage is not None
        return out.model_extra["alicerce"] | {"tokens": out.usage.completion_tokens}  # type: ignore[index]

    first = ask()
    assert first["versions"]["app"] == "recibos@1"  # type: ignore[index]
    moved = cli(home, "apps", "label", "recibos@2", "production")
    assert moved.returncode == 0, moved.stderr
    second = ask()
    assert second["versions"]["app"] == "recibos@2"  # type: ignore[index]
    assert int(second["tokens"]) <= 12  # type: ignore[call-overload]
    trace = json.loads(cli(home, "traces", "show", str(second["trace_id"]), "--json").stdout)
    assert trace["app_version"] == 2 and trace["lineage"]["model_identity"].startswith("sha256:")
    with pytest.raises(openai.PermissionDeniedError):  # a key limited to `other`
        client(base, limited).chat.completions.create(model="recibos", messages=QUESTION)


def test_the_console_path_on_the_real_model(live: tuple[str, str, str], home: Path) -> None:
    """The console's whole path against a live `alicerce serve` with real SmolLM2 answers
    and real e5 retrieval: a rated-down answer, corrected into a golden dataset from the
    review queue, a new prompt version, two app versions evaluated as background jobs,
    compared row by row (with links to both traces), and the label moved; then the CLI
    sees what the console did."""
    from playwright.sync_api import sync_playwright

    base, key, _ = live
    http = client(base, key)
    asked = http.chat.completions.create(model="kb", messages=QUESTION, temperature=0)
    trace_id = asked.model_extra["alicerce"]["trace_id"]  # type: ignore[index]
    req = urllib.request.Request(base + "/v1/feedback", method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        data=json.dumps({"trace_id": trace_id, "score": -1}).encode())
    assert urllib.request.urlopen(req).status == 200
    assert CHROMIUM, "the browser test needs Debian's chromium: apt install chromium"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(base + "/console")
        page.fill("#key", key)
        page.click("form button[type=submit]")
        page.wait_for_url(base + "/console")
        page.goto(base + "/console/review")
        card = page.locator(f"#r-{trace_id}")
        card.locator("textarea").fill("Within 30 days.")
        card.locator("button[value=correct]").click()
        page.wait_for_selector(f"#r-{trace_id}.done")

        page.goto(base + "/console/prompts/rag-answer")
        page.click("summary:has-text('New version')")
        page.fill("#psys", page.input_value("#psys") + "\nAnswer in one short sentence.")
        page.click("form button:has-text('Save as a new version')")
        page.wait_for_url("**/console/prompts/rag-answer@*")
        new = page.url.rsplit("@", 1)[1]
        for prompt in ("rag-answer@1", f"rag-answer@{new}"):
            page.goto(base + "/console/apps")
            page.fill("#spec", f"name: console-flow\ncollections: [kb]\nprompt: {prompt}\n")
            page.click("form button:has-text('Deploy')")
            page.wait_for_url("**/console/apps/console-flow?deployed=*")
        for ref in ("console-flow@1", "console-flow@2"):
            page.goto(base + "/console/evals")
            page.click("summary:has-text('Run an evaluation')")
            page.fill("input[name=app]", ref)
            page.select_option("select[name=dataset]", "golden@1")
            with page.expect_navigation():
                page.click("form[method=post][action='/console/evals'] button[type=submit]")
        deadline = time.time() + 240
        while page.locator("#eval-jobs tr:has-text('done')").count() < 2 \
                and time.time() < deadline:
            page.wait_for_timeout(500)
        assert page.locator("#eval-jobs tr:has-text('done')").count() == 2, \
            page.inner_text("#eval-jobs")
        runs = page.locator("#eval-jobs a").all_inner_texts()
        page.goto(base + f"/console/evals/compare?a={runs[1]}&b={runs[0]}")
        assert page.locator("table.compare tbody tr").count() == 1
        page.click("table.compare >> text=Trace B")
        page.wait_for_selector("svg.timeline")
        assert "generate" in page.inner_text("ul.steps")  # the real model's step
        page.goto(base + "/console/apps/console-flow")
        page.select_option("form[action$='/label'] select[name=version]", "2")
        with page.expect_navigation():  # the loaded page would not wait for the POST
            page.click("text=Move label")
        browser.close()
    shown = json.loads(cli(home, "apps", "show", "console-flow@production", "--json").stdout)
    assert shown["version"] == 2 and shown["spec"]["prompt"] == f"rag-answer@{new}"
    golden = json.loads(cli(home, "datasets", "show", "golden", "--json").stdout)
    assert golden["items"][0]["reference"] == "Within 30 days."
    assert len(json.loads(cli(home, "eval", "list", "--app", "console-flow", "--json").stdout)) == 2
