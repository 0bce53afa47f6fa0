"""The prompts evaluation ships: judges and synthetic data. They live in the prompt registry
like the RAG prompt, so every score and every synthetic question names the exact prompt
version that produced it, and users can change them the normal way.

Judges answer in JSON forced by a grammar (`SCHEMAS`); the explanation comes first so a
small model reasons before it commits to a label.
"""

from __future__ import annotations

from typing import Any

from alicerce.prompts.template import PromptTemplate

JUDGE_SYSTEM = ("You are a strict, fair evaluator of a question-answering assistant. "
                "Judge only what you are shown. Reply with JSON only.")

ANSWER = """\
Compare the generated answer with the reference answer to the question.

Question: {{ question }}

Reference answer: {{ reference }}

Generated answer: {{ answer }}

Classify the generated answer:
- RELEVANT: it gives the information of the reference answer (wording may differ).
- PARTLY_RELEVANT: it gives part of that information, or adds claims the reference lacks.
- NON_RELEVANT: it misses the information, contradicts the reference, or refuses.
Write a short explanation first, then the label."""

ANSWER_RELEVANCE = """\
Does the answer address the question?

Question: {{ question }}

Answer: {{ answer }}

Classify the answer:
- RELEVANT: it answers what was asked.
- PARTLY_RELEVANT: it answers part of it, or mostly something else.
- NON_RELEVANT: it does not answer the question, or refuses.
Write a short explanation first, then the label."""

CONTEXT_RELEVANCE = """\
Do these retrieved passages contain what is needed to answer the question?

Question: {{ question }}

Passages:
{% for c in contexts %}[{{ loop.index }}] {{ c }}

{% endfor %}
Classify the passages:
- RELEVANT: together they contain the answer.
- PARTLY_RELEVANT: they are on the topic but lack part of the answer.
- NON_RELEVANT: they are not about the question.
Write a short explanation first, then the label."""

GROUNDEDNESS = """\
Is every claim of the answer supported by the passages? Use only the passages, not what you
know.

Passages:
{% for c in contexts %}[{{ loop.index }}] {{ c }}

{% endfor %}
Answer: {{ answer }}

Classify the answer:
- SUPPORTED: every claim, name and number in it is stated in the passages.
- PARTLY_SUPPORTED: some claims are in the passages, others are not.
- UNSUPPORTED: its main claims are not in the passages, or contradict them.
Write a short explanation first, then the label."""

PAIRWISE = """\
Two assistants answered the same question. Which answer is better: more correct, more
complete, better supported, and in the language of the question?

Question: {{ question }}
{% if reference %}
Reference answer: {{ reference }}
{% endif %}
Answer A: {{ answer_a }}

Answer B: {{ answer_b }}

Write a short explanation first, then the better answer (A, B, or TIE when they are equally
good), and how confident you are (low, medium, high)."""

COUNTERFACTUAL = """\
An assistant answered the same question twice. Do the two answers differ in substance: a
different fact, amount, deadline, rule, permission or recommendation, or one answers and
the other does not? Differences of wording, order, length or politeness do not count.

Question: {{ question }}

Answer 1: {{ answer_a }}

Answer 2: {{ answer_b }}

Write a short explanation first, then the label: DIFFERENT or SAME."""

SYNTH_QUESTION = """\
{% if language == "pt" %}
Você cria perguntas de teste para um assistente que responde com base em documentos.
Leia o trecho e escreva {{ n }} perguntas diferentes que um usuário faria e que o trecho
responde. Cada pergunta deve ser completa e entendida sem o trecho, usar poucas palavras do
trecho, e não conter a resposta. Escreva em português.

Título: {{ title }}
Trecho: {{ text }}
{% else %}
You write test questions for an assistant that answers from documents.
Read the passage and write {{ n }} different questions a user would ask that the passage
answers. Each question must be complete and understandable without the passage, use few
words from it, and not contain the answer. Write in English.

Title: {{ title }}
Passage: {{ text }}
{% endif %}"""

PARAPHRASE = """\
{% if language == "pt" %}
Reescreva a pergunta de {{ n }} formas diferentes, com outras palavras e o mesmo sentido.
Escreva em português.
{% else %}
Rewrite the question in {{ n }} different ways, with other words and the same meaning.
Write in English.
{% endif %}
Question: {{ question }}"""

EVAL_PROMPTS: tuple[PromptTemplate, ...] = (
    PromptTemplate("judge-answer", ANSWER, JUDGE_SYSTEM,
                   "Judge: generated answer against the reference answer (3 labels)."),
    PromptTemplate("judge-answer-relevance", ANSWER_RELEVANCE, JUDGE_SYSTEM,
                   "Judge: does the answer address the question (RAG triad)."),
    PromptTemplate("judge-context-relevance", CONTEXT_RELEVANCE, JUDGE_SYSTEM,
                   "Judge: do the retrieved passages hold the answer (RAG triad)."),
    PromptTemplate("judge-groundedness", GROUNDEDNESS, JUDGE_SYSTEM,
                   "Judge: is every claim supported by the passages (RAG triad)."),
    PromptTemplate("judge-pairwise", PAIRWISE, JUDGE_SYSTEM,
                   "Judge: which of two answers is better (AutoSxS style)."),
    PromptTemplate("judge-counterfactual", COUNTERFACTUAL, JUDGE_SYSTEM,
                   "Judge: do two answers to counterfactual questions differ in substance."),
    PromptTemplate("synth-question", SYNTH_QUESTION, "",
                   "Synthetic test questions from a chunk, in its language."),
    PromptTemplate("synth-paraphrase", PARAPHRASE, "",
                   "Paraphrases of a question (dataset augmentation)."),
)


def _label_schema(labels: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    props: dict[str, Any] = {"explanation": {"type": "string", "maxLength": 300},
                             "label": {"enum": list(labels)}, **extra}
    return {"type": "object", "properties": props, "required": list(props),
            "additionalProperties": False}


RELEVANCE_LABELS = ("RELEVANT", "PARTLY_RELEVANT", "NON_RELEVANT")
SUPPORT_LABELS = ("SUPPORTED", "PARTLY_SUPPORTED", "UNSUPPORTED")
SCHEMAS: dict[str, dict[str, Any]] = {
    "judge-answer": _label_schema(RELEVANCE_LABELS),
    "judge-answer-relevance": _label_schema(RELEVANCE_LABELS),
    "judge-context-relevance": _label_schema(RELEVANCE_LABELS),
    "judge-groundedness": _label_schema(SUPPORT_LABELS),
    "judge-pairwise": _label_schema(("A", "B", "TIE"),
                                    confidence={"enum": ["low", "medium", "high"]}),
    "judge-counterfactual": _label_schema(("DIFFERENT", "SAME")),
}
# Labels as scores: the first label of each scale is 1, the middle 0.5, the last 0.
SCORES = {"RELEVANT": 1.0, "PARTLY_RELEVANT": 0.5, "NON_RELEVANT": 0.0,
          "SUPPORTED": 1.0, "PARTLY_SUPPORTED": 0.5, "UNSUPPORTED": 0.0,
          "DIFFERENT": 1.0, "SAME": 0.0}


def list_schema(n: int) -> dict[str, Any]:
    """JSON for synthetic questions or paraphrases: exactly `n` strings."""
    return {"type": "object", "properties": {"questions": {
        "type": "array", "items": {"type": "string", "minLength": 8, "maxLength": 300},
        "minItems": n, "maxItems": n}}, "required": ["questions"],
        "additionalProperties": False}
