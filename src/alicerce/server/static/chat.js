// Chat page: streams /v1/chat/completions (SSE), shows the cited sources, sends thumbs,
// ratings and comments to /v1/feedback.
const $ = (id) => document.getElementById(id);
const keyBox = $("key"), appBox = $("app"), log = $("log"), status = $("status");
keyBox.value = localStorage.getItem("alicerce-key") || "";
keyBox.addEventListener("change", () => { localStorage.setItem("alicerce-key", keyBox.value); loadApps(); });

function headers() {
  const h = { "Content-Type": "application/json" };
  if (keyBox.value) h["Authorization"] = "Bearer " + keyBox.value.trim();
  return h;
}

async function failure(resp) {
  try { return (await resp.json()).error.message; } catch (e) { return resp.status + " " + resp.statusText; }
}

async function loadApps() {
  status.textContent = "";
  const resp = await fetch("/v1/models", { headers: headers() });
  if (!resp.ok) { status.textContent = await failure(resp); return; }
  const apps = (await resp.json()).data.filter((m) => m.kind === "app");
  appBox.replaceChildren(...apps.map((m) => new Option(m.id, m.id)));
  if (!apps.length) status.textContent = "No app yet: ingest documents into a collection first.";
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// An agent's steps, folded under its answer: thought, call with its arguments, what came back.
function showSteps(turn, steps) {
  const box = el("details", "steps");
  box.append(el("summary", "", `${steps.length} passo${steps.length === 1 ? "" : "s"} do agente / agent steps`));
  const list = el("ol", "");
  for (const s of steps) {
    const li = el("li", s.error ? "step error" : "step");
    if (s.thought) li.append(el("div", "thought", s.thought));
    li.append(el("code", "call", `${s.tool || "?"}(${JSON.stringify(s.args || {})})` + (s.ms !== undefined ? ` · ${s.ms} ms` : "")));
    li.append(el("pre", "observation", s.observation || ""));
    list.append(li);
  }
  box.append(list);
  turn.append(box);
}

function showSources(turn, extra) {
  if (extra.steps && extra.steps.length) showSteps(turn, extra.steps);
  const list = el("ol", "sources");
  for (const c of extra.citations || []) {
    const li = el("li", "source", c.title + (c.section ? " — " + c.section : "") + (c.page ? " (p. " + c.page + ")" : ""));
    li.value = c.n;
    list.append(li);
  }
  if (list.children.length) turn.append(list);
  if (extra.blocked) turn.append(el("p", "guard", "Bloqueado pela proteção / blocked by guard: " + extra.blocked));
  const thumbs = el("div", "thumbs");
  for (const [label, score] of [["Útil / helpful", 1], ["Não ajudou / not helpful", -1]]) {
    const b = el("button", "thumb", label);
    b.type = "button";
    b.dataset.score = score;
    b.setAttribute("aria-label", score > 0 ? "thumbs up" : "thumbs down");
    b.addEventListener("click", async () => {
      const resp = await fetch("/v1/feedback", { method: "POST", headers: headers(),
        body: JSON.stringify({ trace_id: extra.trace_id, score: score }) });
      if (resp.ok) { thumbs.querySelectorAll("button").forEach((x) => x.classList.remove("done")); b.classList.add("done"); }
      else status.textContent = await failure(resp);
    });
    thumbs.append(b);
  }
  turn.append(thumbs);
  if (extra.trace_id && !extra.blocked && !extra.abstained && !(extra.steps && extra.steps.length)) turn.append(whyButton(extra.trace_id));
  turn.append(ratingForm(extra.trace_id));
}

// "Why this answer?": the sources and sentences the answer rests on, measured by removing
// parts of them and rescoring the answer (POST /v1/traces/{id}/explain; many model calls).
const WHY_BUDGET = 16;
function whyButton(traceId) {
  const box = el("div", "why");
  const b = el("button", "why-button", "Por que esta resposta? / why this answer?");
  b.type = "button";
  b.addEventListener("click", async () => {
    b.disabled = true;
    const working = el("div", "working", "");
    working.setAttribute("role", "status");
    const started = Date.now();
    const tick = () => { working.textContent = `Medindo em que fontes a resposta se apoia (até ${WHY_BUDGET} chamadas ao modelo)… ${Math.round((Date.now() - started) / 1000)} s`; };
    tick();
    const timer = setInterval(tick, 1000);
    box.append(working);
    try {
      const resp = await fetch(`/v1/traces/${encodeURIComponent(traceId)}/explain`, { method: "POST",
        headers: headers(), body: JSON.stringify({ budget: WHY_BUDGET }) });
      if (!resp.ok) { box.append(el("p", "why-error", await failure(resp))); b.disabled = false; return; }
      showWhy(box, await resp.json());
      b.remove();
    } catch (e) {
      box.append(el("p", "why-error", String(e)));
      b.disabled = false;
    } finally {
      clearInterval(timer);
      working.remove();
    }
  });
  box.append(b);
  return box;
}

function showWhy(box, e) {
  const panel = el("div", "why-panel");
  panel.append(el("p", "why-lead", "A resposta se apoia em / the answer rests on:"));
  const sources = el("ul", "why-sources");
  for (const s of e.sources) {
    const li = el("li", s.relied ? "relied" : "unrelied",
      `[${s.n}] ${s.title}: ` + (s.relied ? "usada / relied on" : (s.cited ? "citada, mas não usada / cited but not relied on" : "não usada / not relied on")));
    sources.append(li);
  }
  const top = Math.max(...e.sentences.map((x) => x.score), 1e-9);
  const sentences = el("ol", "why-sentences");
  for (const x of e.sentences.slice(0, 3).filter((x) => x.score > 0)) {
    const li = el("li", "");
    const bar = el("span", "why-bar");
    bar.style.width = `${Math.max(4, Math.round(60 * x.score / top))}px`;
    li.append(bar, el("span", "", ` [${x.source}] ${x.text}`));
    sentences.append(li);
  }
  panel.append(sources, el("p", "why-lead", "As frases que mais pesaram / the sentences that weigh most:"), sentences,
    el("small", "why-cost", `${e.method}, ${e.calls} chamadas / calls, ${e.seconds.toFixed(1)} s`));
  box.append(panel);
}

// A 1-5 rating and a comment (optionally the right answer) on one answer's trace.
function ratingForm(traceId) {
  const box = el("details", "rate");
  box.append(el("summary", "", "Avaliar / rate"));
  const stars = el("select", "stars");
  stars.setAttribute("aria-label", "rating");
  stars.append(new Option("—", ""), ...[5, 4, 3, 2, 1].map((n) => new Option("★".repeat(n), n)));
  const comment = el("textarea", "comment");
  comment.rows = 2;
  comment.placeholder = "Comentário ou a resposta certa / comment or the right answer";
  comment.setAttribute("aria-label", "comment");
  const send = el("button", "send-rating", "Enviar avaliação");
  send.type = "button";
  send.addEventListener("click", async () => {
    const body = { trace_id: traceId, score: 0, comment: comment.value.trim() };
    if (stars.value) body.rating = Number(stars.value);
    const resp = await fetch("/v1/feedback", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (resp.ok) { send.classList.add("done"); send.textContent = "Obrigado / thanks"; }
    else status.textContent = await failure(resp);
  });
  box.append(stars, comment, send, el("small", "trace", "trace " + traceId));
  return box;
}

$("ask").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  status.textContent = "";
  $("send").disabled = true;
  const turn = el("div", "turn");
  turn.append(el("div", "q", question));
  const answer = el("div", "a", "");
  // A working state until the first words: reading the sources takes a while on a CPU.
  const working = el("div", "working", "");
  working.setAttribute("role", "status");
  const started = Date.now();
  const tick = () => {
    const s = Math.round((Date.now() - started) / 1000);
    working.textContent = (s < 5 ? "Procurando nos documentos" : "Lendo as fontes e escrevendo a resposta") + `… ${s} s`;
  };
  tick();
  const timer = setInterval(tick, 1000);
  const stopWorking = () => { clearInterval(timer); working.remove(); };
  turn.append(working, answer);
  log.append(turn);
  $("question").value = "";
  $("send").textContent = "Respondendo…";
  try {
    const resp = await fetch("/v1/chat/completions", { method: "POST", headers: headers(),
      body: JSON.stringify({ model: appBox.value, stream: true, messages: [{ role: "user", content: question }] }) });
    if (!resp.ok) {
      answer.textContent = "";
      const wait = resp.headers.get("Retry-After");
      status.textContent = await failure(resp) + (wait ? ` Tente de novo em ${wait} s.` : "");
      return;
    }
    const reader = resp.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).replace(/^data: /, "");
        buffer = buffer.slice(cut + 2);
        if (line === "[DONE]") continue;
        const chunk = JSON.parse(line);
        if (chunk.error) { status.textContent = chunk.error.message; continue; }
        const choice = chunk.choices[0];
        if (choice && choice.delta.content) { stopWorking(); answer.textContent += choice.delta.content; }
        if (chunk.alicerce) {
          if (typeof chunk.alicerce.answer === "string") answer.textContent = chunk.alicerce.answer;
          showSources(turn, chunk.alicerce);
        }
      }
    }
  } catch (e) {
    status.textContent = String(e);
  } finally {
    stopWorking();
    $("send").disabled = false;
    $("send").textContent = "Enviar";
  }
});

loadApps();
