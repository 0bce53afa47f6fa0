"""The prompts Alicerce ships; they become version 1 of their names in every new home.

Users change them the normal way (`alicerce prompts create rag-answer --file ...` then move
the `production` label), so answers always name the exact prompt version they used.
Small models follow short, concrete rules with an example better than long prose. The
user turn ends with the question: a rules reminder after it made qwen-0.5b (and sometimes
qwen-1.5b) answer with bare citations such as "[1] [2]" (docs/benchmarks.md).
"""

from __future__ import annotations

from alicerce.prompts.agent import AGENT_PROMPTS
from alicerce.prompts.judges import EVAL_PROMPTS
from alicerce.prompts.template import PromptTemplate

ABSTAIN = {"pt": "Não encontrei isso nos documentos.",
           "en": "I could not find this in the documents."}

RAG_SYSTEM = """\
{% if language == "pt" %}
Você responde perguntas usando apenas as fontes numeradas fornecidas.
Regras:
1. Use somente informações das fontes. Não invente nada.
2. Depois de cada frase, cite a fonte que a sustenta com o número entre colchetes, ex.: [1].
3. As fontes geralmente trazem a resposta: leia todas. Só se nenhuma fonte tratar da
pergunta, escreva apenas: {{ abstain }}
4. Responda em português, em poucas frases.
{% if extractiveness == "quote" %}
5. Copie literalmente, entre aspas, os trechos das fontes que respondem.
{% elif extractiveness == "paraphrase" %}
5. Explique com suas próprias palavras, sem copiar trechos longos.
{% endif %}
{% else %}
You answer questions using only the numbered sources given.
Rules:
1. Use only information from the sources. Do not make anything up.
2. After each sentence, cite the source that supports it by its number in brackets, e.g. [1].
3. The sources usually contain the answer: read them all. Only if no source is about the
question at all, write only: {{ abstain }}
4. Answer in English, in a few sentences.
{% if extractiveness == "quote" %}
5. Quote, verbatim and in quotation marks, the passages of the sources that answer.
{% elif extractiveness == "paraphrase" %}
5. Explain in your own words, without copying long passages.
{% endif %}
{% endif %}"""

RAG_TEMPLATE = """\
{% if language == "pt" %}Fontes:{% else %}Sources:{% endif %}

{% for s in sources %}
[{{ s.n }}] {{ s.title }}{% if s.section %} — {{ s.section }}{% endif %}

{{ s.text }}

{% endfor %}
{% if language == "pt" %}
Pergunta: {{ question }}
{% else %}
Question: {{ question }}
{% endif %}"""

CONDENSE_TEMPLATE = """\
{% if language == "pt" %}
Reescreva a última pergunta do usuário como uma pergunta completa, que possa ser entendida \
sem a conversa. Responda apenas com a pergunta reescrita, em português.

Conversa:
{% for m in history %}{{ "Usuário" if m.role == "user" else "Assistente" }}: {{ m.content }}
{% endfor %}
Última pergunta: {{ question }}
Pergunta completa:
{% else %}
Rewrite the user's last question as a complete question that can be understood without the \
conversation. Reply with the rewritten question only, in English.

Conversation:
{% for m in history %}{{ "User" if m.role == "user" else "Assistant" }}: {{ m.content }}
{% endfor %}
Last question: {{ question }}
Complete question:
{% endif %}"""

ZERO_SHOT = "{% if instructions %}{{ instructions }}\n\n{% endif %}{{ input }}"

K_SHOT = """\
{% if instructions %}{{ instructions }}

{% endif %}
{% for e in examples %}
Input: {{ e.input }}
Output: {{ e.output }}

{% endfor %}
Input: {{ input }}
Output:"""

COT = """\
{% if instructions %}{{ instructions }}

{% endif %}
{{ input }}

Think step by step and write your reasoning. Then write the last line as \
"{{ final_marker }} <answer>"."""

ZERO_SHOT_COT = """\
{% if instructions %}{{ instructions }}

{% endif %}
{{ input }}

Let's think step by step."""

COT_EXTRACT = """\
{{ input }}

Reasoning:
{{ reasoning }}

Therefore, the final answer (answer only, same language as the question) is:"""

DECOMPOSE = """\
Break the problem below into the simpler sub-questions that must be answered first, in \
order, the last one being the problem itself. Write one sub-question per line, numbered \
1., 2., ... and nothing else.

Problem: {{ input }}"""

SOLVE_STEP = """\
{% if context %}{{ context }}

{% endif %}
Problem: {{ input }}
{% for qa in solved %}
Q: {{ qa.question }}
A: {{ qa.answer }}
{% endfor %}
Q: {{ question }}
A:"""

STEP_BACK = """\
Write one more general question (the "step-back" question) whose answer gives the \
principles or background needed for the question below. Reply with that question only, \
in the language of the question.

Question: {{ input }}
Step-back question:"""

STEP_BACK_ANSWER = """\
{% if context %}{{ context }}

{% endif %}
Background question: {{ step_back }}
{% if step_back_answer %}Background: {{ step_back_answer }}
{% endif %}

Using the background, answer: {{ input }}"""

SUMMARISE = """\
Resuma o texto abaixo em duas ou três frases, no mesmo idioma do texto. Mantenha a opinião \
do autor e os fatos principais; não acrescente nada.

Texto:
{{ text }}

Resumo:"""

CLASSIFY_SENTIMENT = """\
Classifique o sentimento do autor no texto abaixo como positive, negative ou neutral, com \
a sua confiança entre 0 e 1. Responda só com JSON: {"label": ..., "confidence": ...}

Texto:
{{ text }}"""

EXTRACT_JSON = """\
Extraia do documento abaixo: {{ instructions }}. Use só o que está escrito no documento; \
quando algo não estiver lá, use null. Responda só com JSON.

Documento:
{{ text }}"""

RERANK_RELEVANCE = """\
Question: {{ query }}

Passage: {{ passage }}

Does the passage contain the answer to the question? Answer yes or no."""

BUILTINS: tuple[PromptTemplate, ...] = (
    PromptTemplate("rag-answer", RAG_TEMPLATE, RAG_SYSTEM,
                   "Grounded answer with numbered sources and [n] citations."),
    PromptTemplate("condense-question", CONDENSE_TEMPLATE, "",
                   "Chat follow-up rewritten into a standalone question."),
    PromptTemplate("zero-shot", ZERO_SHOT, "", "Instructions (optional) and the input."),
    PromptTemplate("k-shot", K_SHOT, "", "Input/output examples, then the input."),
    PromptTemplate("cot", COT, "", "Chain of thought with a marked final answer."),
    PromptTemplate("zero-shot-cot", ZERO_SHOT_COT, "", "'Let's think step by step' (stage 1)."),
    PromptTemplate("cot-extract", COT_EXTRACT, "", "Zero-shot CoT stage 2: the answer alone."),
    PromptTemplate("least-to-most-decompose", DECOMPOSE, "", "Least-to-most: sub-questions."),
    PromptTemplate("least-to-most-solve", SOLVE_STEP, "", "Least-to-most: one sub-question."),
    PromptTemplate("step-back", STEP_BACK, "", "Step-back: the more general question."),
    PromptTemplate("step-back-answer", STEP_BACK_ANSWER, "", "Step-back: the final answer."),
    PromptTemplate("summarise", SUMMARISE, "", "Chains: a two or three sentence summary."),
    PromptTemplate("classify-sentiment", CLASSIFY_SENTIMENT, "",
                   "Chains: sentiment label and confidence, as JSON."),
    PromptTemplate("extract-json", EXTRACT_JSON, "",
                   "Chains: fields named in `instructions`, from a document, as JSON."),
    PromptTemplate("rerank-relevance", RERANK_RELEVANCE,
                   "You judge whether a passage answers a question. Reply yes or no.",
                   "Rerank step (llm): does the passage answer the query?"),
    *AGENT_PROMPTS,
    *EVAL_PROMPTS,
)
