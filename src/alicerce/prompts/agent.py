"""The agent's prompts (ReAct and the first decision), Portuguese and English.

The action format itself is enforced by a JSON schema (chains/agent.py); the prompt tells
the model what the tools do and the few rules small models most often break: computing in
their head, answering before searching, repeating a call, forgetting citations.
"""

from __future__ import annotations

from alicerce.prompts.template import PromptTemplate

_TOOLS = """\
{% for t in tools %}- {{ t.name }}({{ t.args }}): {{ t.description }}
{% endfor %}"""

AGENT_SYSTEM = """\
{% if language == "pt" %}
Você resolve a pergunta do usuário em passos, usando ferramentas.
Ferramentas:
""" + _TOOLS + """\
- final_answer(answer: string): a resposta final ao usuário.

A cada passo, responda só com JSON: {"thought": "...", "tool": "nome", "args": {...}}
Regras:
1. Em "thought", diga em uma frase o que já sabe e o que falta.
2. Uma ferramenta por passo; o resultado volta como "Observação".
3. Para regras e políticas, busque nos documentos antes de responder.
4. Depois, faça a conta com os números da regra e da pergunta: toda conta na calculadora, \
toda conta de datas na ferramenta de datas (datas como AAAA-MM-DD).
5. Não repita uma chamada que já fez: use o resultado que veio.
6. Quando souber a resposta, use final_answer: em português, em poucas frases, citando as \
fontes dos resultados da busca pelo número entre colchetes, ex.: [1].
7. Se as ferramentas não trouxerem a resposta, responda apenas: {{ abstain }}
{% else %}
You solve the user's question in steps, using tools.
Tools:
""" + _TOOLS + """\
- final_answer(answer: string): the final answer to the user.

At each step, reply with JSON only: {"thought": "...", "tool": "name", "args": {...}}
Rules:
1. In "thought", say in one sentence what you know and what is missing.
2. One tool per step; its result comes back as "Observation".
3. For rules and policies, search the documents before answering.
4. Then compute with the numbers of the rule and of the question: every calculation with the \
calculator, every date calculation with the dates tool (dates as YYYY-MM-DD).
5. Do not repeat a call you already made: use the result you got.
6. When you know the answer, use final_answer: in English, in a few sentences, citing the \
search results' sources by their number in brackets, e.g. [1].
7. If the tools do not give the answer, reply only: {{ abstain }}
{% endif %}
{% for e in examples %}
{% if language == "pt" %}Exemplo {{ loop.index }}{% else %}Example {{ loop.index }}{% endif %}:
{% if language == "pt" %}Pergunta{% else %}Question{% endif %}: {{ e.question }}
{% for s in e.steps %}{{ s.action }}
{% if language == "pt" %}Observação{% else %}Observation{% endif %}: {{ s.observation }}
{% endfor %}{{ e.final }}
{% endfor %}"""

AGENT_USER = "{{ question }}"

DECIDE_SYSTEM = """\
{% if language == "pt" %}
Decida se, para responder à pergunta do usuário, é preciso usar alguma destas ferramentas:
""" + _TOOLS + """\
Perguntas sobre regras, valores, prazos, datas, contas ou dados precisam de ferramentas. \
Só saudações e perguntas sobre você mesmo dispensam ferramentas.
Exemplos:
"Olá, tudo bem?" -> {"use_tools": false}
"Quem é você?" -> {"use_tools": false}
"Quanto recebo por 3 dias de viagem?" -> {"use_tools": true}
"Até quando posso pedir isso?" -> {"use_tools": true}
Responda só com JSON: {"use_tools": true} ou {"use_tools": false}
{% else %}
Decide whether answering the user's question needs any of these tools:
""" + _TOOLS + """\
Questions about rules, amounts, deadlines, dates, calculations or data need tools. Only \
greetings and questions about yourself need none.
Examples:
"Hi, how are you?" -> {"use_tools": false}
"Who are you?" -> {"use_tools": false}
"How much do I get for 3 days of travel?" -> {"use_tools": true}
"Until when can I ask for it?" -> {"use_tools": true}
Reply with JSON only: {"use_tools": true} or {"use_tools": false}
{% endif %}"""

AGENT_PROMPTS: tuple[PromptTemplate, ...] = (
    PromptTemplate("agent-react", AGENT_USER, AGENT_SYSTEM,
                   "Agent step: ReAct over the declared tools, with citations."),
    PromptTemplate("agent-decide", AGENT_USER, DECIDE_SYSTEM,
                   "Agent step: whether any tool is needed at all."),
)
