"""Evaluation with fakes: datasets, metrics, statistics, grounding, judges, runs, memo,
comparison, gates and reports. The real-model flow is in test_evaluate_real.py."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from alicerce import Alicerce, Settings, datasets
from alicerce.errors import InputError, JudgeError, NotFoundError
from alicerce.evaluate.compare import compare, gate, parse_limits
from alicerce.evaluate.report import html_report, markdown
from alicerce.evaluate.stats import bootstrap, cohen_kappa, paired_difference
from alicerce.evaluate.synth import leaks
from alicerce.evaluate.text import answer_scores, f1
from alicerce.metrics.grounding import check
from alicerce.metrics.judges import Judge
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.types import Message

ROWS = [
    {"question": "How many days to send receipts?", "sources": ["refund.md"],
     "reference": "Send receipts within 30 days."},
    {"question": "Quantos dias de férias por ano?", "sources": "ferias.txt",
     "reference": "São 30 dias de férias por ano.", "tags": ["pt"]},
    {"question": "What is the Wi-Fi code?", "sources": ["q1"]},
    {"question": "Which form do I use?", "sources": ["missing.md"],
     "reference": "Form 7."},
]


def judge_reply(label: str = "RELEVANT", support: str = "SUPPORTED",
                answer: str = "Send receipts within 30 days [1].") -> ScriptedGenerator:
    """Answers RAG prompts with `answer`, judge prompts with JSON."""
    def reply(messages: Sequence[Message]) -> str:
        text = messages[-1].content
        if "Answer A:" in text:
            return json.dumps({"explanation": "A is complete", "label": "A",
                               "confidence": "high"})
        if "Classify the answer:\n- SUPPORTED" in text:
            return json.dumps({"explanation": "stated", "label": support})
        if "Classify" in text:
            return json.dumps({"explanation": "fine", "label": label})
        return answer
    return ScriptedGenerator(reply, name="fake")


@pytest.fixture
def alc(tmp_path: Path, docs: Path) -> Iterator[Alicerce]:
    a = Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing", abstain_below=0.0,
                               generator="fake"))
    a.use_generator("fake", judge_reply())
    a.ingest([docs], "kb")
    yield a
    a.close()


@pytest.fixture
def golden(tmp_path: Path) -> Path:
    p = tmp_path / "golden.jsonl"
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS)
                 + '\n{"questio": "typo"}\nnot json\n', encoding="utf-8")
    return p


# -- datasets -------------------------------------------------------------------------------
def test_dataset_rows_problems_and_content_version(golden: Path, tmp_path: Path) -> None:
    ds = datasets.load(golden)
    assert [r.question for r in ds.rows][:2] == [ROWS[0]["question"], ROWS[1]["question"]]
    assert ds.rows[1].sources == ("ferias.txt",) and ds.rows[1].tags == ("pt",)
    assert [(p.line, p.reason.split(" (")[0]) for p in ds.problems] == [
        (5, "no question"), (6, "not JSON")]
    as_csv = tmp_path / "golden.csv"
    with as_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, ["id", "question", "sources", "reference", "tags"])
        w.writeheader()
        for r in ds.rows:
            w.writerow({"id": r.id, "question": r.question, "sources": "|".join(r.sources),
                        "reference": r.reference, "tags": "|".join(r.tags)})
    assert datasets.load(as_csv).version == ds.version  # same rows, same version
    out = tmp_path / "copy.jsonl"
    datasets.write_jsonl(ds.rows, out)
    assert datasets.load(out).version == ds.version
    changed = tmp_path / "changed.jsonl"
    changed.write_text(golden.read_text().replace("30 days", "31 days"), encoding="utf-8")
    assert datasets.load(changed).version != ds.version


def test_bad_datasets_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        datasets.load(tmp_path / "nope.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"answer": "x"}\n')
    with pytest.raises(InputError, match=r"no usable rows.*line 1: no question"):
        datasets.load(empty)
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(InputError, match="unsupported format"):
        datasets.load(tmp_path / "x.xml")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="SQuAD"):
        datasets.load(tmp_path / "bad.json")


def test_public_formats_and_their_corpora(tmp_path: Path) -> None:
    squad = tmp_path / "faquad.json"
    squad.write_text(json.dumps({"data": [{"title": "UFMS", "paragraphs": [
        {"context": "A UFMS fica em Campo Grande.", "qas": [
            {"id": "q1", "question": "Onde fica a UFMS?",
             "answers": [{"text": "Campo Grande"}, {"text": "em Campo Grande"}]}]}]}]}))
    ds = datasets.load(squad)
    assert ds.rows[0].sources == ("UFMS-0",) and ds.rows[0].reference == "Campo Grande"
    assert datasets.corpus(squad) == [{"id": "UFMS-0", "title": "UFMS",
                                       "text": "A UFMS fica em Campo Grande."}]
    beir = tmp_path / "scifact"
    (beir / "qrels").mkdir(parents=True)
    (beir / "queries.jsonl").write_text('{"_id": "1", "text": "claim one"}\n'
                                        '{"_id": "2", "text": "claim two"}\n')
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t10\t1\n1\t11\t1\n")
    (beir / "corpus.jsonl").write_text('{"_id": "10", "title": "T", "text": "abstract"}\n')
    ds = datasets.load(beir)
    assert [(r.id, r.sources) for r in ds.rows] == [("1", ("10", "11"))]
    assert datasets.corpus(beir)[0]["id"] == "10"


def test_down_rated_feedback_rows_keep_no_expected_sources(tmp_path: Path) -> None:
    p = tmp_path / "fb.jsonl"
    rows = [{"question": "q up?", "answer": "a", "reference_answer": "ref",
             "sources": [{"doc_key": "a.md", "title": "A", "chunk_id": 1}],
             "origin": {"trace_id": "t1", "feedback": {"score": 1}}},
            {"question": "q down?", "answer": "b", "reference_answer": None,
             "sources": [{"doc_key": "b.md", "title": "B", "chunk_id": 2}],
             "origin": {"trace_id": "t2", "feedback": {"score": -1}}}]
    p.write_text("\n".join(json.dumps(r) for r in rows))
    ds = datasets.load(p)
    assert ds.rows[0].sources == ("a.md",) and ds.rows[0].reference == "ref"
    assert ds.rows[1].sources == () and ds.rows[1].origin["trace_id"] == "t2"


# -- metrics and statistics -----------------------------------------------------------------
def test_answer_metrics_keep_portuguese_words() -> None:
    s = answer_scores("A solicitação é feita no portal.", ["A solicitação é feita no portal."])
    assert s["exact_match"] == 1.0 and s["rougeL"] == 1.0 and s["bleu"] == pytest.approx(1.0)
    # rouge-score's own tokenizer would drop "ç"/"ã" and call these identical.
    assert answer_scores("ação", ["acao"])["rouge1"] == 0.0
    best = answer_scores("Campo Grande", ["em Mato Grosso", "Campo Grande"])
    assert best["f1"] == 1.0 and best["exact_match"] == 1.0
    assert 0 < f1("prazo de 30 dias", "30 dias") < 1


def test_bootstrap_kappa_and_paired_difference() -> None:
    e = bootstrap([0, 1, 1, 1, 0, 1, 1, 1, 1, 1])
    assert e.mean == 0.8 and e.low < 0.8 < e.high and e.n == 10
    assert bootstrap([0, 1, 1, 1, 0, 1, 1, 1, 1, 1]) == e  # fixed seed: repeatable
    assert bootstrap([]).n == 0
    # Cohen's kappa by hand: observed 6/10, expected 0.5*0.6 + 0.5*0.4 = 0.5 -> 0.2
    truth = list("AAAAABBBBB")
    pred = list("AAAABABBAA")
    assert cohen_kappa(truth, pred) == pytest.approx((0.6 - 0.5) / 0.5)
    d = paired_difference([0.1] * 20, [0.5] * 20)
    assert d.mean == pytest.approx(0.4) and d.low > 0


def test_grounding_checks_numbers_names_and_words() -> None:
    ctx = ["Os comprovantes vão ao RH em até 30 dias, segundo a Política de Reembolso."]
    good = check("Envie os comprovantes ao RH em até 30 dias [1].", ctx)
    assert good.score > 0.8 and good.unsupported == ()
    wrong_number = check("Envie os comprovantes ao RH em até 45 dias [1].", ctx)
    assert wrong_number.score <= 0.5 and wrong_number.unsupported == ("45",)
    invented = check("Fale com a Petrobras sobre os comprovantes.", ctx)
    assert "Petrobras" in invented.unsupported and invented.facts == 0.0
    assert check("1.000,50 reais", ["custa 1000,5 reais"]).facts == 1.0


# -- judges ---------------------------------------------------------------------------------
def test_judge_verdicts_are_grammar_json(alc: Alicerce) -> None:
    judge = Judge(judge_reply(label="PARTLY_RELEVANT"), alc.prompts.get)
    v = judge.answer("q?", "a", "ref")
    assert (v.label, v.score, v.prompt) == ("PARTLY_RELEVANT", 0.5, "judge-answer@1")
    gen = judge.gen
    assert isinstance(gen, ScriptedGenerator)
    broken = Judge(ScriptedGenerator('{"explanation": "cut o', name="cut"), alc.prompts.get)
    with pytest.raises(JudgeError, match="gave no verdict"):
        broken.answer("q?", "a", "ref")


def test_pairwise_cancels_position_bias(alc: Alicerce) -> None:
    always_a = Judge(judge_reply(), alc.prompts.get)  # prefers whatever is shown first
    p = always_a.pairwise("q?", "one", "two")
    assert (p.winner, p.consistent, p.orders) == ("TIE", False, ("A", "B"))

    def prefers_long(messages: Sequence[Message]) -> str:
        text = messages[-1].content
        a = text.split("Answer A: ")[1].split("\n")[0]
        b = text.split("Answer B: ")[1].split("\n")[0]
        return json.dumps({"explanation": "longer", "label": "A" if len(a) > len(b) else "B",
                           "confidence": "high"})
    fair = Judge(ScriptedGenerator(prefers_long, name="fair"), alc.prompts.get)
    p = fair.pairwise("q?", "short", "a much longer answer")
    assert (p.winner, p.consistent, p.confidence) == ("B", True, 1.0)


# -- runs -----------------------------------------------------------------------------------
def test_run_scores_every_row_and_says_why_a_metric_is_missing(alc: Alicerce,
                                                               golden: Path) -> None:
    run = alc.evals.run("kb", datasets.load(golden), ["retrieval", "answer", "triad", "judge"])
    assert run.rows == 4 and run.failed == 2
    by_q = {r.question: r for r in run.results}
    first = by_q[ROWS[0]["question"]].scores
    assert first["retrieval.hit_rate"] == 1.0 and first["retrieval.mrr"] == 1.0
    assert first["answer.rougeL"] > 0.5 and "answer.cosine" in first
    assert first["judge.correctness"] == 1.0 and first["triad.groundedness"] > 0.5
    assert by_q["What is the Wi-Fi code?"].errors == [
        "no reference answer: answer metrics skipped", "no reference answer: judge skipped"]
    assert any("source ids not in kb: missing.md" in e
               for e in by_q["Which form do I use?"].errors)
    assert run.summary["retrieval.hit_rate"].n == 3  # the unknown id is not scored as a miss
    assert by_q[ROWS[0]["question"]].trace_id  # each answer has its trace
    assert alc.traces.get(by_q[ROWS[0]["question"]].trace_id).caller == "eval"
    stored = alc.evals.runs.get(run.id)
    assert stored.summary == run.summary and stored.results[0].scores == run.results[0].scores
    assert [r.id for r in alc.evals.runs.list("kb")] == [run.id]


def test_rerun_is_served_from_the_memo(alc: Alicerce, golden: Path) -> None:
    gen = alc.generator("fake")
    assert isinstance(gen, ScriptedGenerator)
    ds = datasets.load(golden)
    first = alc.evals.run("kb", ds, ["answer", "triad", "judge"])
    calls = len(gen.calls)
    second = alc.evals.run("kb", ds, ["answer", "triad", "judge"])
    assert len(gen.calls) == calls  # no model call at all
    assert [r.scores for r in second.results] == [r.scores for r in first.results]
    alc.evals.run("kb", ds, ["answer"], cache=False)
    assert len(gen.calls) == calls + len(ds.rows)


def test_judge_failures_and_empty_answers_are_per_row(alc: Alicerce, golden: Path) -> None:
    alc.use_generator("fake", judge_reply(answer=""))  # an empty reply is an abstention
    alc.use_generator("cut", ScriptedGenerator("{", name="cut"))
    run = alc.evals.run("kb", datasets.load(golden), ["answer", "judge"], judge_model="cut")
    assert run.rows == 4 and run.summary["answer.abstained"].mean == 1.0
    assert all(any(e.startswith("judge: judge cut gave no verdict") for e in r.errors)
               for r in run.results if r.question != "What is the Wi-Fi code?")


def test_compare_gate_and_report(alc: Alicerce, golden: Path, tmp_path: Path) -> None:
    spec = tmp_path / "app.yaml"
    spec.write_text("name: rh\ncollections: [kb]\nretrieval: {k: 3}\n")
    alc.deploy_app(spec)
    ds = datasets.load(golden)
    base = alc.evals.run("rh", ds, ["retrieval", "answer"])
    spec.write_text("name: rh\ncollections: [kb]\nretrieval: {k: 4}\n")
    alc.deploy_app(spec)
    alc.use_generator("fake", judge_reply(answer="Não sei."))
    worse = alc.evals.run("rh@2", ds, ["retrieval", "answer"])
    c = compare(base, worse)
    rouge = next(d for d in c.metrics if d.metric == "answer.rougeL")
    assert rouge.delta.mean < 0 and c.questions[0].change < 0
    baseline = alc.evals.baseline(worse, "production")  # production is still version 1
    assert baseline.id == base.id
    failed = gate(worse, baseline, parse_limits("answer.rougeL=0.03,retrieval.mrr=0.02"), {})
    assert not failed.passed
    assert "answer.rougeL fell" in next(c.reason for c in failed.checks if not c.ok)
    assert gate(worse, baseline, {"answer.rougeL": 1.0}, {}).passed
    assert not gate(worse, None, {}, {"answer.f1": 0.9}).passed
    missing = gate(worse, baseline, {"judge.correctness": 0.1}, {})
    assert "not in this run" in missing.checks[0].reason
    with pytest.raises(InputError, match="METRIC=NUMBER"):
        parse_limits("answer.rougeL")
    with pytest.raises(NotFoundError, match="no run of rh@2"):
        alc.evals.baseline(worse, "@2")  # its own run does not count
    with pytest.raises(NotFoundError):
        alc.evals.baseline(worse, "staging")
    page = html_report(worse, c)
    assert page.count("<svg") == len(worse.summary) + 1  # a histogram each, one comparison
    assert "answer.rougeL" in page and "Questions that changed most" in page
    assert "| answer.rougeL |" in markdown(worse, c)


def test_pairwise_run(alc: Alicerce, golden: Path, tmp_path: Path) -> None:
    spec = tmp_path / "app.yaml"
    spec.write_text("name: rh\ncollections: [kb]\n")
    alc.deploy_app(spec)
    spec.write_text("name: rh\ncollections: [kb]\nretrieval: {k: 2}\n")
    alc.deploy_app(spec)
    run = alc.evals.pairwise("rh@1", "rh@2", datasets.load(golden))
    assert run.kind == "pairwise" and run.rows == 4
    # The fake judge always picks what it sees first: both orders disagree, so every pair
    # is a tie, which is what cancelling position bias means.
    assert run.summary["pairwise.b_wins"].mean == 0.5
    assert run.summary["pairwise.consistent"].mean == 0.0


def test_synthetic_question_filters() -> None:
    passage = "Os comprovantes de despesas devem ser enviados ao RH em até 30 dias corridos."
    assert leaks("Os comprovantes de despesas devem ser enviados ao RH em quanto tempo?",
                 passage)
    assert not leaks("Qual o prazo para mandar recibos de despesas?", passage)


def test_the_shipped_golden_set_matches_the_sample_handbook(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[1] / "examples"
    with Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing")) as a:
        a.ingest([examples / "handbook"], "handbook")
        golden = datasets.load(examples / "handbook-golden.jsonl")
        run = a.evals.run("handbook", golden, ["retrieval"])
    assert len(golden.rows) == 21
    assert run.rows == 21 and run.failed == 0  # every source id names a handbook document
    assert run.summary["retrieval.hit_rate"].n == 21
