"""The console in a real headless Chromium (Playwright) against a real uvicorn server: each
page's main path, with screenshots kept in test-artifacts/console/; and, in-process, sign-in,
sessions, CSRF, escaping of user content, the read-only key, and the interface text in both
languages.

The server answers with the hashing embedder and a scripted model, so the browser tests take
seconds; the console renders the same route results whatever the model is."""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from alicerce import Alicerce, Settings
from alicerce.datasets import Row, build
from alicerce.server import create_app
from alicerce.server.console.i18n import TEXT
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.types import Message

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
XSS = '<img src=x onerror="window.pwned=1"><script>window.pwned=1</script>'
SPEC = """name: rh
description: RH assistant
collections: [kb]
"""


def make(home: Path, docs: Path, **overrides: Any) -> tuple[Settings, Alicerce]:
    settings = Settings.load(home=home, embedder="hashing", abstain_below=0.0,
                             generator="fake", guards={}, **overrides)
    alc = Alicerce(settings)
    alc.use_generator("fake", ScriptedGenerator("Send receipts within 30 days [1].",
                                                name="fake", scorer=loglik))
    alc.ingest([docs], "kb")
    return settings, alc


def loglik(messages: Sequence[Message], text: str) -> float:
    """The answer rests on the refund sentence: 6 nats likelier with it."""
    return -12.0 + 6.0 * any("Send receipts within 30 days." in m.content for m in messages)


def sign_in(client: TestClient, key: str, lang: str = "en") -> str:
    """Sign a TestClient in; the session's CSRF token."""
    form = client.get("/console/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf, form
    r = client.post("/console/login", data={"csrf": csrf.group(1), "key": key, "lang": lang},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    page = client.get("/console").text
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token, page
    return token.group(1)


@pytest.fixture
def served(tmp_path: Path, docs: Path) -> Iterator[tuple[Alicerce, TestClient]]:
    settings, alc = make(tmp_path / "h", docs)
    with TestClient(create_app(settings, alc), base_url="http://127.0.0.1:8000") as client:
        yield alc, client
    alc.close()


# -- in-process: sessions, CSRF, escaping, scopes, text ----------------------------------
def test_sign_in_sessions_and_csrf(served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    admin_key, admin = alc.keys.create("ops", ["admin"])
    assert client.get("/console/traces", follow_redirects=False).headers[
        "location"] == "/console/login?next=/console/traces"
    form = client.get("/console/login")
    assert form.headers["content-security-policy"].startswith("default-src 'self'")
    login_csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore
    cookie = form.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    wrong = client.post("/console/login", data={"csrf": login_csrf, "key": "alc-x-y"})
    assert wrong.status_code == 401 and "not valid" in wrong.text
    forged = client.post("/console/login", data={"csrf": "forged", "key": admin},
                         follow_redirects=False)
    assert forged.status_code == 403  # sign-in CSRF: a token not from this browser's form
    csrf = sign_in(client, admin)
    assert client.cookies.get("alicerce_session")
    # every change needs the session's token, from this origin
    body = {"name": "bot", "scopes": ["ask"]}
    assert client.post("/console/ops/keys", data=body).status_code == 403
    assert client.post("/console/ops/keys", data={**body, "csrf": "x" * 30}).status_code == 403
    other_site = client.post("/console/ops/keys", data={**body, "csrf": csrf},
                             headers={"Origin": "https://evil.example"})
    assert other_site.status_code == 403 and "another site" in other_site.text
    made = client.post("/console/ops/keys", data={**body, "csrf": csrf})
    assert made.status_code == 201 and "alc-" in made.text
    assert client.post("/console/logout", data={"csrf": csrf},
                       follow_redirects=False).status_code == 303
    assert client.get("/console", follow_redirects=False).status_code == 303
    # a revoked key's sessions end at once
    sign_in(client, admin)
    alc.keys.revoke(admin_key.id)
    assert client.get("/console", follow_redirects=False).status_code == 303
    htmx = client.get("/console/traces", headers={"HX-Request": "true"})
    assert htmx.headers["hx-redirect"].startswith("/console/login")


def test_user_content_is_escaped_everywhere(served: tuple[Alicerce, TestClient],
                                            tmp_path: Path) -> None:
    """A question, a document and a tool output carrying markup show as text."""
    alc, client = served
    _, admin = alc.keys.create("ops", ["admin"])
    doc = tmp_path / "evil"
    doc.mkdir()
    (doc / f"x{XSS[:10]}.md").write_text(f"# Title {XSS}\n\nBody {XSS} receipts.\n")
    alc.ingest([doc], "evil")
    tid = alc.traces.record("kb", "someone", f"question {XSS}", answer={
        "answer": f"answer {XSS}", "abstained": False, "citations": [
            {"n": 1, "title": XSS, "section": XSS, "doc_key": XSS}],
        "versions": {}, "usage": {}, "timings": {}},
        spans=[{"name": "tool", "start_ms": 0, "ms": 1, "attrs": {"output": XSS,
                                                                  "raw": XSS}}])
    alc.traces.feedback(tid, -1, comment=XSS, reference=XSS)
    alc.traces.flush()
    sign_in(client, admin)
    pages = [f"/console/traces/{tid}", "/console/traces", "/console/review",
             "/console/collections/evil"]
    for url in pages:
        html = client.get(url).text
        assert "<script>window" not in html and '<img src=x' not in html, url
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html or \
               "&lt;img src=x" in html, url
    hits = client.post("/console/collections/evil/search", data={
        "query": "receipts", "csrf": re.search(r'name="csrf" value="([^"]+)"', client.get(
            "/console").text).group(1)})  # type: ignore[union-attr]
    assert hits.status_code == 200 and "<img src=x" not in hits.text
    assert "&lt;img src=x" in hits.text


def test_a_traces_page_shows_its_conversation_with_annotations(
        served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    _, admin = alc.keys.create("ops", ["admin"])
    cid, stream = alc.chat("How long to send receipts?", "kb", caller="x")
    first = [a for a in stream if not isinstance(a, str)][-1]
    _, stream = alc.chat("And the taxi?", "kb", cid, caller="x")
    second = [a for a in stream if not isinstance(a, str)][-1]
    alc.traces.flush()
    alc.traces.feedback(first.trace_id, -1, comment="Which policy <b>exactly</b>?")
    sign_in(client, admin)
    html = client.get(f"/console/traces/{second.trace_id}").text
    assert 'id="conversation"' in html and "How long to send receipts?" in html
    assert "Which policy &lt;b&gt;exactly&lt;/b&gt;?" in html
    assert f'href="/console/traces/{first.trace_id}"' in html


def test_a_trace_view_explains_its_answer_in_place(
        served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    _, admin = alc.keys.create("ops", ["admin"])
    _, reader = alc.keys.create("auditor", ["read"])
    tid = alc.ask("How long to send receipts?", "kb").trace_id
    alc.traces.flush()
    csrf = sign_in(client, admin)
    page = client.get(f"/console/traces/{tid}").text
    assert 'id="why-form"' in page and "Why this answer?" in page
    part = client.post(f"/console/traces/{tid}/explain", data={"csrf": csrf, "budget": "12"},
                       headers={"HX-Request": "true", "Origin": "http://127.0.0.1:8000"})
    assert part.status_code == 200, part.text
    assert "Send receipts within 30 days." in part.text and "relied on" in part.text
    assert "<html" not in part.text  # the partial, swapped in place
    page = client.get(f"/console/traces/{tid}").text  # kept: shown, no form again
    assert 'id="why-form"' not in page and "6.00" in page
    # "what if": the request asked again with one change, shown beside the first
    part = client.post(f"/console/traces/{tid}/counterfactual",
                       data={"csrf": csrf, "change": "troque 'receipts' por '<b>x</b>'"},
                       headers={"HX-Request": "true", "Origin": "http://127.0.0.1:8000"})
    assert part.status_code == 200, part.text
    assert "How long to send &lt;b&gt;x&lt;/b&gt;?" in part.text and "<b>x" not in part.text
    new = re.search(r'href="/console/traces/([0-9a-f]+)"', part.text)
    assert new, part.text
    assert "A counterfactual of" in client.get(f"/console/traces/{new.group(1)}").text
    assert 'id="cf-result"' in client.get(f"/console/traces/{tid}").text
    client.cookies.clear()
    csrf = sign_in(client, reader)
    assert "6.00" in client.get(f"/console/traces/{tid}").text  # a read key reads it
    refused = client.post(f"/console/traces/{tid}/explain", data={"csrf": csrf},
                          headers={"Origin": "http://127.0.0.1:8000"})
    assert refused.status_code == 403


def test_auth_off_console_and_the_operations_page(tmp_path: Path, docs: Path) -> None:
    """README's first command serves with --no-auth: the console then signs in without a
    key (as the local operator), and still checks the CSRF token on every change. The
    operations page draws a tuning run's loss curve and a batch job's progress."""
    from alicerce.tune.config import TuneConfig

    settings, alc = make(tmp_path / "h", docs, auth=False)
    run = alc.tune_runs.start(caller="local", name="rh-style", base="smollm2-135m",
                              base_identity="sha256:x", config=TuneConfig(), data="d.jsonl",
                              data_version="v1", rows=(8, 2), code_version="0.1.0")
    alc.tune_runs.log(run.id, [{"step": 1, "loss": 2.5, "eval_loss": 2.7},
                               {"step": 2, "loss": 2.1, "eval_loss": 2.4}])
    job = alc.batches.create("local", "kb", 1, tmp_path / "in.jsonl", tmp_path / "out.jsonl", 1)
    with TestClient(create_app(settings, alc), base_url="http://127.0.0.1:8000") as client:
        form = client.get("/console/login").text
        assert 'id="key"' not in form and "Authentication is off" in form
        csrf = sign_in(client, "")
        assert "local (auth off)" in client.get("/console").text
        ops = client.get("/console/ops").text
        assert 'id="curve-1">{"x": [1, 2], "y": [2.5, 2.1], "y2": [2.7, 2.4]}' in ops
        assert job.id in ops and "<progress" in ops
        runs = client.get("/v1/tune/runs").json()["data"]
        assert runs[0]["history"][1]["loss"] == 2.1
        assert client.post("/console/ops/keys", data={"name": "x", "scopes": "ask"}
                           ).status_code == 403  # no token: refused even with auth off
        assert client.post("/console/ops/keys", data={"name": "x", "scopes": "ask",
                                                      "csrf": csrf}).status_code == 201
    alc.close()


def test_read_key_sees_pages_and_cannot_change_anything(
        served: tuple[Alicerce, TestClient]) -> None:
    alc, client = served
    _, reader = alc.keys.create("auditor", ["read"])
    alc.deploy_app(SPEC)
    tid = alc.traces.record("kb", "someone", "q?", answer={
        "answer": "a", "abstained": False, "citations": [], "versions": {}, "usage": {},
        "timings": {}})
    alc.traces.feedback(tid, -1)
    alc.traces.flush()
    csrf = sign_in(client, reader)
    for url in ("/console", "/console/traces", f"/console/traces/{tid}", "/console/apps",
                "/console/apps/rh", "/console/prompts/rag-answer", "/console/evals",
                "/console/datasets", "/console/review", "/console/ops", "/console/ops/keys",
                "/console/collections/kb"):
        r = client.get(url)
        assert r.status_code == 200, (url, r.text[:300])
        posts = re.findall(r'<form method="post" action="([^"]+)"', r.text)
        offered = [a for a in posts if a not in ("/console/logout", "/console/lang")
                   and not a.endswith("/search")]  # a search changes nothing
        assert not offered, (url, offered)  # no write form is offered
    writes = [("/console/ops/keys", {"name": "x", "scopes": "admin"}),
              ("/console/apps", {"spec": SPEC}),
              ("/console/apps/rh/label", {"version": "1"}),
              ("/console/apps/rh/rollback", {}),
              ("/console/prompts/rag-answer", {"template": "{{ question }}"}),
              ("/console/prompts/rag-answer/label", {"version": "1"}),
              (f"/console/review/{tid}", {"action": "accept"}),
              (f"/console/traces/{tid}/feedback", {"score": "1"}),
              ("/console/ops/keys/x/revoke", {})]
    for url, data in writes:
        r = client.post(url, data={**data, "csrf": csrf})
        assert r.status_code == 403, (url, r.status_code, r.text[:300])
    assert alc.apps.versions("rh")[-1].version == 1 and len(alc.keys.all()) == 1
    assert not alc.datasets.all() and len(alc.traces.feedback_for(tid)) == 1


def test_every_interface_text_exists_in_both_languages(
        served: tuple[Alicerce, TestClient]) -> None:
    root = Path(__file__).resolve().parent.parent / "src/alicerce/server/console/templates"
    used: set[str] = set()
    for f in root.glob("*.html"):
        text = f.read_text()
        used |= set(re.findall(r"(?<![a-z_.])t\('([a-z_]+)'\)", text))
        used |= set(re.findall(r"(?<![a-z_.])t\('([a-z_]+)',", text))
        for prefix in re.findall(r"(?<![a-z_.])t\('([a-z_]+_)' ~", text):
            used |= {prefix + v for v in _SUFFIXES[prefix]}
    used |= {"traces", "collections", "apps", "prompts", "evaluations", "datasets", "review",
             "operations", "requests", "answers", "errors", "tokens", "rate_limited",
             "queue_depth"}  # named in template lists
    missing = sorted(k for k in used if k not in TEXT)
    assert not missing, missing
    assert all(en.strip() and pt.strip() for en, pt in TEXT.values())
    alc, client = served
    _, admin = alc.keys.create("ops", ["admin"])
    sign_in(client, admin, lang="pt")
    html = client.get("/console/traces").text
    assert 'lang="pt-BR"' in html and "Pular para o conteúdo" in html and "Filtrar" in html


_SUFFIXES = {"status_": ("ok", "error", "any"), "job_": ("queued", "running", "done", "failed"),
             "decided_": ("accept", "correct", "discard"),
             "scope_": ("ask", "ingest", "read", "admin", "models", "unguarded"),
             "feedback_": ("any", "up", "down", "none"), "side_": ("input", "output")}


# -- a real browser ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Alicerce]]:
    root = tmp_path_factory.mktemp("console")
    docs = root / "docs"
    docs.mkdir()
    (docs / "refund.md").write_text("# Refund policy\n\nSend receipts within 30 days.\n\n"
                                    "## Travel\n\nTaxi and hotel are refunded.\n")
    (docs / "ferias.txt").write_text("Férias\n\nSão 30 dias de férias por ano.")
    settings, alc = make(root / "h", docs)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, alc), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    yield f"http://127.0.0.1:{port}", alc
    server.should_exit = True
    thread.join(timeout=10)
    alc.close()


@pytest.fixture(scope="module")
def browser(live: tuple[str, Alicerce]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "the browser tests need Debian's chromium: apt install chromium"
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def open_console(browser: Any, base: str, key: str, lang: str = "en") -> Any:
    page = browser.new_page(locale="pt-BR" if lang == "pt" else "en-US",
                            viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))  # a script failed
    # a page answered 4xx on purpose (a form error) is fine; a missing asset is not
    page.on("console", lambda m: errors.append(m.text) if m.type == "error"
            and not m.text.startswith("Failed to load resource") else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400
            and r.request.resource_type != "document" else None)
    page.errors = errors
    page.goto(base + "/console")
    page.wait_for_selector("#key")
    page.fill("#key", key)
    page.select_option("#lang", lang)
    page.click("form button[type=submit]")
    page.wait_for_url(base + "/console")
    return page


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_browser_sign_in_traces_and_a_trace_view(browser: Any,
                                                 live: tuple[str, Alicerce]) -> None:
    base, alc = live
    _, admin = alc.keys.create("ops", ["admin"])
    bad = browser.new_page()
    bad.goto(base + "/console/login")
    bad.fill("#key", "alc-nope-nope")
    bad.click("form button[type=submit]")
    assert "not valid" in bad.inner_text(".error")
    shot(bad, "sign-in-error")
    bad.close()
    page = open_console(browser, base, admin)
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url))
    alc.ask("How long to send receipts?", "kb")
    page.goto(base + "/console/traces")
    page.wait_for_selector("#trace-rows a")
    first = page.locator("#trace-rows tr").count()
    alc.ask("Is a taxi refunded?", "kb")  # a new trace shows up without a reload
    deadline = time.time() + 15  # (no wait_for_function: the page's CSP forbids eval)
    while page.locator("#trace-rows tr").count() <= first and time.time() < deadline:
        page.wait_for_timeout(200)
    assert page.locator("#trace-rows tr").count() > first
    shot(page, "traces")
    page.click("#trace-rows tr:first-child a")
    page.wait_for_selector("svg.timeline")
    assert "Is a taxi refunded?" in page.inner_text("main")
    assert page.locator("ul.steps li").count() >= 4
    page.click("ul.steps li:has-text('prompt') summary")
    assert "Prompt as sent" in page.inner_text("main")
    shot(page, "trace")
    page.fill("#comment", "Missing the policy name.")
    page.check("input[name=score][value='-1']")
    page.click("text=Save annotation")
    page.wait_for_selector("#feedback ~ ul.feedback q")
    assert "Missing the policy name." in page.inner_text("ul.feedback")
    page.click("#why-form button[type=submit]")  # "why this answer?", swapped in place
    page.wait_for_selector("#why-result table")
    assert "relied on" in page.inner_text("#why-result")
    shot(page, "trace-why")
    assert all(u.startswith(base) for u in asked), asked  # nothing from another origin
    assert not page.errors, page.errors
    page.close()


def test_browser_upload_search_deploy_and_roll_back(browser: Any, live: tuple[str, Alicerce],
                                                    tmp_path: Path) -> None:
    base, alc = live
    _, admin = alc.keys.create("ops2", ["admin"])
    page = open_console(browser, base, admin)
    page.goto(base + "/console/collections/kb")
    (tmp_path / "wifi.md").write_text("# Wi-Fi\n\nAsk reception for the guest code.\n")
    page.set_input_files("#files", str(tmp_path / "wifi.md"))
    page.click("text=Upload >> nth=-1")
    page.wait_for_selector(".job.done", timeout=30_000)
    assert "1 added" in page.inner_text(".job")
    page.fill("#q", "guest code reception")
    page.click("form button:has-text('Search')")
    page.wait_for_selector("#hits table")
    assert "wifi.md" in page.inner_text("#hits tbody tr:first-child")
    shot(page, "collection-search")

    page.goto(base + "/console/apps")
    page.fill("#spec", "name: rh\ncollections: [nope]\n")
    page.click("form button:has-text('Deploy')")
    assert "nope" in page.inner_text("#deploy-error")
    assert page.input_value("#spec").startswith("name: rh")  # the text stays to fix
    shot(page, "deploy-error")
    page.fill("#spec", SPEC)
    page.click("form button:has-text('Deploy')")
    page.wait_for_selector(".notice")
    page.goto(base + "/console/apps")
    page.fill("#spec", SPEC.replace("RH assistant", "RH assistant, v2"))
    page.click("form button:has-text('Deploy')")
    page.wait_for_url("**/console/apps/rh?deployed=2")
    page.select_option("select[name=version] >> nth=0", "2")
    with page.expect_navigation():  # the page already shows a production label
        page.click("text=Move label")
    assert alc.app("rh@production").version == 2  # type: ignore[union-attr]
    with page.expect_navigation():
        page.click("text=Roll back")
    assert alc.app("rh@production").version == 1  # type: ignore[union-attr]
    page.goto(base + "/console/apps/rh?a=1&b=2")
    assert "RH assistant, v2" in page.inner_text("pre.diff .add")
    assert page.locator("ol.plan li.step").count() >= 3
    shot(page, "app")
    assert not page.errors, page.errors
    page.close()


def test_browser_compare_two_runs_and_follow_a_row_to_its_trace(
        browser: Any, live: tuple[str, Alicerce]) -> None:
    base, alc = live
    _, reader = alc.keys.create("auditor", ["read"])
    ds = build("golden", [Row("r1", "How long to send receipts?", ("refund.md",),
                              "Within 30 days."),
                          Row("r2", "Is a taxi refunded?", ("refund.md",), "Yes.")])
    a = alc.evals.run("kb", ds, ["retrieval", "answer"])
    alc.use_generator("fake", ScriptedGenerator("I do not know.", name="fake"))
    try:
        b = alc.evals.run("kb", ds, ["retrieval", "answer"], cache=False)
    finally:
        alc.use_generator("fake", ScriptedGenerator("Send receipts within 30 days [1].",
                                                    name="fake"))
    page = open_console(browser, base, reader)
    page.goto(base + "/console/evals")
    page.wait_for_selector(".chart .u-over", timeout=10_000)  # uPlot drew the metric
    shot(page, "evals")
    page.select_option("select[name=a]", a.id)
    page.select_option("select[name=b]", b.id)
    page.click("form button:has-text('Compare')")
    page.wait_for_selector("table.compare tbody tr")
    assert "I do not know." in page.inner_text("table.compare tbody tr:first-child")
    shot(page, "compare")
    page.click("table.compare tbody tr:first-child >> text=Trace B")
    page.wait_for_selector("svg.timeline")
    assert "I do not know." in page.inner_text("main")
    assert page.locator("form[action$='/feedback']").count() == 0  # read: nothing to send
    page.goto(base + f"/console/evals/{a.id}")
    assert page.locator("svg.hist").count() >= 1
    shot(page, "run")
    assert not page.errors, page.errors
    page.close()


def test_browser_review_a_rated_down_answer_into_a_dataset(
        browser: Any, live: tuple[str, Alicerce]) -> None:
    base, alc = live
    _, admin = alc.keys.create("ops3", ["admin"])
    answer = alc.ask("Is wine refunded?", "kb")
    alc.traces.flush()
    alc.traces.feedback(answer.trace_id, -1, comment="Wrong policy.")
    page = open_console(browser, base, admin, lang="pt")
    page.goto(base + "/console/review")
    card = page.locator(f"#r-{answer.trace_id}")
    assert "Wrong policy." in card.inner_text()
    shot(page, "review")
    card.locator("textarea").fill("No, wine is not refunded.")
    card.locator("input[name=dataset]").fill("golden-console")
    card.locator("button[value=correct]").click()
    page.wait_for_selector(f"#r-{answer.trace_id}.done")
    page.click(f"#r-{answer.trace_id} a")
    page.wait_for_selector("text=golden-console@1")
    assert "No, wine is not refunded." in page.inner_text("main")
    shot(page, "dataset")
    row = alc.datasets.get("golden-console").rows[0]
    assert row.reference == "No, wine is not refunded." and \
        row.origin["trace_id"] == answer.trace_id
    assert not page.errors, page.errors
    page.close()


def test_browser_create_and_revoke_a_key_and_keyboard_use(
        browser: Any, live: tuple[str, Alicerce]) -> None:
    base, alc = live
    _, admin = alc.keys.create("ops4", ["admin"])
    page = open_console(browser, base, admin)
    page.goto(base + "/console/ops/keys")
    page.fill("#kname", "scripts")
    page.click("form button:has-text('Create')")
    secret = page.input_value("#secret")
    assert secret.startswith("alc-") and page.evaluate("document.activeElement.id") == "secret"
    shot(page, "key-created")
    assert alc.keys.verify(secret).name == "scripts"
    page.goto(base + "/console/ops/keys")  # shown once: the page again does not show it
    assert page.locator("#secret").count() == 0
    page.click("button[aria-label='Revoke scripts']")
    page.wait_for_selector("tr.revoked")
    with pytest.raises(Exception, match="revoked"):
        alc.keys.verify(secret)
    # keyboard: the skip link is the first stop and leads to the content
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    unlabelled = page.evaluate("""[...document.querySelectorAll(
        'input:not([type=hidden]), select, textarea')].filter(e => !(e.labels && e.labels.length)
        && !e.getAttribute('aria-label')).map(e => e.name)""")
    assert unlabelled == [], unlabelled
    page.goto(base + "/console/ops")
    shot(page, "ops")
    assert not page.errors, page.errors
    page.close()


def test_browser_from_a_rated_down_answer_to_a_label_move(
        browser: Any, live: tuple[str, Alicerce]) -> None:
    """The issue's whole path without the CLI: a rated-down answer, its trace, a corrected
    golden row, a new prompt version deployed and compared with the old one on that
    dataset, and the label moved to the better version."""
    base, alc = live

    def reply(messages: Any) -> str:
        named = "Always name the policy." in messages[0].content
        return ("The refund policy says: send receipts within 30 days [1]." if named
                else "Send receipts within 30 days [1].")
    alc.use_generator("fake", ScriptedGenerator(reply, name="fake"))
    _, admin = alc.keys.create("ops5", ["admin"])
    alc.deploy_app("name: rh-flow\ncollections: [kb]\nprompt: rag-answer@1\n")
    asked = alc.ask("How long do I have to send receipts?", "rh-flow")
    alc.traces.flush()
    alc.traces.feedback(asked.trace_id, -1, comment="Which policy?")
    page = open_console(browser, base, admin)

    page.goto(base + "/console/review")
    page.click(f"#r-{asked.trace_id} h2 a")  # the answer's trace
    page.wait_for_selector("svg.timeline")
    assert "Which policy?" in page.inner_text("#feedback ~ ul.feedback")
    shot(page, "flow-1-trace")
    page.go_back()
    card = page.locator(f"#r-{asked.trace_id}")
    card.locator("textarea").fill("The refund policy: within 30 days.")
    card.locator("input[name=dataset]").fill("golden-flow")
    card.locator("button[value=correct]").click()
    page.wait_for_selector(f"#r-{asked.trace_id}.done")
    shot(page, "flow-2-reviewed")

    page.goto(base + "/console/prompts/rag-answer@1")
    page.click("summary:has-text('New version')")
    system = page.input_value("#psys")
    page.fill("#psys", system + "\nAlways name the policy.")
    page.click("form button:has-text('Save as a new version')")
    page.wait_for_url("**/console/prompts/rag-answer@2")
    shot(page, "flow-3-prompt")
    page.goto(base + "/console/apps")
    page.fill("#spec", "name: rh-flow\ncollections: [kb]\nprompt: rag-answer@2\n")
    page.click("form button:has-text('Deploy')")
    page.wait_for_url("**/console/apps/rh-flow?deployed=2")

    for ref in ("rh-flow@1", "rh-flow@2"):
        page.goto(base + "/console/evals")
        page.click("summary:has-text('Run an evaluation')")
        page.fill("input[name=app]", ref)
        page.select_option("select[name=dataset]", "golden-flow@1")
        with page.expect_navigation():
            page.click("form[method=post][action='/console/evals'] button[type=submit]")
        page.wait_for_selector("#eval-jobs")
    deadline = time.time() + 120
    while page.locator("#eval-jobs tr:has-text('done')").count() < 2 \
            and time.time() < deadline:
        page.wait_for_timeout(300)  # the jobs table refreshes itself while jobs run
    assert page.locator("#eval-jobs tr:has-text('done')").count() >= 2, \
        page.inner_text("#eval-jobs")
    shot(page, "flow-4-jobs")
    runs = {r.app_version: r.id for r in alc.evals.runs.list("rh-flow")}
    page.goto(base + f"/console/evals/compare?a={runs[1]}&b={runs[2]}")
    row = page.inner_text("table.compare tbody tr:first-child")
    assert "The refund policy says" in row and "Send receipts" in row
    f1 = page.inner_text("table.list tr:has-text('answer.f1')")
    assert "+" in f1  # the corrected reference names the policy: B is closer to it
    shot(page, "flow-5-compare")

    page.goto(base + "/console/apps/rh-flow")
    page.select_option("form[action$='/label'] select[name=version]", "2")
    with page.expect_navigation():  # the loaded page would not wait for the POST
        page.click("text=Move label")
    assert alc.app("rh-flow@production").version == 2  # type: ignore[union-attr]
    shot(page, "flow-6-label")
    assert not page.errors, page.errors
    alc.use_generator("fake", ScriptedGenerator("Send receipts within 30 days [1].",
                                                name="fake"))
    page.close()


def test_browser_shows_markup_as_text_and_labels_every_control(
        browser: Any, live: tuple[str, Alicerce], tmp_path: Path) -> None:
    """In a real browser: a question, a document and a tool output carrying markup run no
    script and add no element; and every form control on every page has a label."""
    base, alc = live
    _, admin = alc.keys.create("ops6", ["admin"])
    doc = tmp_path / "evil"
    doc.mkdir()
    (doc / "evil.md").write_text(f"# Evil {XSS}\n\nReceipts {XSS} policy.\n")
    alc.ingest([doc], "evil")
    tid = alc.traces.record("kb", "someone", f"question {XSS}", answer={
        "answer": f"answer {XSS}", "abstained": False, "citations": [
            {"n": 1, "title": XSS, "section": XSS, "doc_key": XSS}],
        "versions": {}, "usage": {}, "timings": {}},
        spans=[{"name": "tool", "start_ms": 0, "ms": 1, "attrs": {"output": XSS}}])
    alc.traces.feedback(tid, -1, comment=XSS)
    alc.traces.flush()
    page = open_console(browser, base, admin)
    for url in (f"/console/traces/{tid}", "/console/traces", "/console/review"):
        page.goto(base + url)
        assert page.evaluate("() => window.pwned") is None, url
        assert page.locator("main img").count() == 0, url
        assert "<script>window.pwned=1</script>" in page.inner_text("main"), url
    page.goto(base + "/console/collections/evil")
    page.fill("#q", "receipts policy")
    page.click("form button:has-text('Search')")
    page.wait_for_selector("#hits table")
    assert page.evaluate("() => window.pwned") is None
    assert "<img src=x" in page.inner_text("#hits")
    for url in ("/console", "/console/traces", f"/console/traces/{tid}", "/console/collections",
                "/console/collections/kb", "/console/apps", "/console/prompts/rag-answer",
                "/console/evals", "/console/datasets", "/console/review", "/console/drift",
                "/console/ops", "/console/ops/keys"):
        page.goto(base + url)
        unlabelled = page.evaluate("""() => [...document.querySelectorAll(
            'input:not([type=hidden]), select, textarea')].filter(e => !(e.labels &&
            e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name)""")
        assert unlabelled == [], (url, unlabelled)
    assert not page.errors, page.errors
    page.close()


def test_browser_prompt_playground_runs_two_versions_side_by_side(
        browser: Any, live: tuple[str, Alicerce]) -> None:
    base, alc = live
    alc.prompts.create("greet", "Say hello to {{ name }}.")
    alc.prompts.create("greet", "Say goodbye to {{ name }}.")
    alc.use_generator("fake", ScriptedGenerator(lambda m: "echo: " + m[-1].content,
                                                name="fake"))
    _, user = alc.keys.create("ana7", ["ask", "read"])
    try:
        page = open_console(browser, base, user)
        page.goto(base + "/console/prompts/greet@2")
        page.select_option("select[name=version_a]", "1")
        page.select_option("select[name=version_b]", "2")
        page.select_option("select[name=model_a]", "fake")
        page.select_option("select[name=model_b]", "fake")
        page.fill("#var-name", "Ana")
        page.click("form[action$='/play'] button[type=submit]")
        page.wait_for_selector("#play section.side >> nth=1")
        sides = page.locator("#play section.side").all_inner_texts()
        assert "echo: Say hello to Ana." in sides[0] and "greet@1" in sides[0]
        assert "echo: Say goodbye to Ana." in sides[1] and "greet@2" in sides[1]
        shot(page, "playground")
        assert not page.errors, page.errors
        page.close()
    finally:
        alc.use_generator("fake", ScriptedGenerator("Send receipts within 30 days [1].",
                                                    name="fake"))
