"""Decoding parameters: every knob, validated once, with errors that say what to change.

A backend declares which knobs it honours (`Generator.supports`); asking for one it cannot
honour is an error naming the backends that can, never a silent ignore.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from alicerce.errors import InputError

OutputFormat = Literal["text", "bullets", "json"]
FORMATS: tuple[OutputFormat, ...] = ("text", "bullets", "json")

# Which backend honours which non-default knob. Beam search needs the whole beam's logits at
# every step, which neither llama.cpp's server nor the OpenAI API exposes; transformers has
# it, but no grammars, penalties on presence/frequency or log-probabilities here.
SUPPORT: dict[str, frozenset[str]] = {
    "transformers": frozenset({"top_k", "min_p", "repetition_penalty", "seed", "n", "stop",
                               "num_beams", "length_penalty", "early_stopping"}),
    "llama.cpp": frozenset({"top_k", "min_p", "repetition_penalty", "presence_penalty",
                            "frequency_penalty", "seed", "n", "logprobs", "stop", "json_schema",
                            "bullets"}),
    "openai": frozenset({"top_k", "min_p", "repetition_penalty", "presence_penalty",
                         "frequency_penalty", "seed", "n", "logprobs", "stop", "json_schema",
                         "bullets"}),
}
BEAM_HINT = ('serve the model on the transformers backend: in alicerce.toml, [models.NAME] '
             'path = "MODEL", backend = "transformers" (pip install \'alicerce[tune]\')')


@dataclass(frozen=True)
class DecodingParams:
    """How to sample. temperature 0 is greedy; top_k 0, top_p 1 and min_p 0 switch a filter off.

    The defaults are OpenAI's, so a request that sets nothing is valid on every backend.
    """

    max_tokens: int = 512
    temperature: float = 0.2
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    format: OutputFormat = "text"
    json_schema: dict[str, Any] | None = field(default=None, hash=False)
    num_beams: int = 1
    length_penalty: float = 1.0  # beam search: > 1 favours longer sequences, < 1 shorter
    early_stopping: bool = False  # beam search: stop once num_beams sequences are done

    def __post_init__(self) -> None:
        _check(1 <= self.max_tokens <= 32768, f"max_tokens must be 1..32768, got {self.max_tokens}",
               "e.g. --max-tokens 256")
        _check(0.0 <= self.temperature <= 2.0,
               f"temperature must be 0..2, got {self.temperature}",
               "0 = greedy (deterministic), 0.2-0.8 for answers, up to 2 for variety")
        _check(self.top_k >= 0, f"top_k must be 0 or more, got {self.top_k}", "0 switches it off")
        _check(0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}",
               "e.g. 0.9 keeps the smallest set of tokens holding 90% of the probability")
        _check(0.0 <= self.min_p < 1.0, f"min_p must be in [0, 1), got {self.min_p}",
               "e.g. 0.05; 0 switches it off")
        _check(0.0 < self.repetition_penalty <= 3.0,
               f"repetition_penalty must be in (0, 3], got {self.repetition_penalty}",
               "1.0 = no penalty, 1.1 = mild")
        for name in ("presence_penalty", "frequency_penalty"):
            v = getattr(self, name)
            _check(-2.0 <= v <= 2.0, f"{name} must be -2..2, got {v}", "0 = no penalty")
        _check(len(self.stop) <= 16 and all(isinstance(s, str) and s for s in self.stop),
               f"stop must be up to 16 non-empty strings, got {list(self.stop)!r}",
               "e.g. --stop '###'")
        _check(self.seed is None or 0 <= self.seed < 2**32, f"seed must be 0..2^32-1, "
               f"got {self.seed}", "any fixed number makes sampling repeatable")
        _check(1 <= self.n <= 8, f"n (candidates) must be 1..8, got {self.n}", "e.g. --n 3")
        _check(0 <= self.top_logprobs <= 20, f"top_logprobs must be 0..20, "
               f"got {self.top_logprobs}", "e.g. --top-logprobs 5")
        _check(self.format in FORMATS, f"unknown output format {self.format!r}",
               "use " + ", ".join(FORMATS))
        _check(1 <= self.num_beams <= 16, f"num_beams must be 1..16, got {self.num_beams}",
               "1 = no beam search; 4 is usual")
        _check(-5.0 <= self.length_penalty <= 5.0,
               f"length_penalty must be -5..5, got {self.length_penalty}",
               "1.0 = a sequence's score is its log-probability over its length")
        _check(isinstance(self.early_stopping, bool),
               f"early_stopping must be true or false, got {self.early_stopping!r}", "")
        if self.json_schema is not None:
            _check(self.format == "json", "a JSON schema needs format 'json'",
                   "add --format json, or leave out the schema")
            check_schema(self.json_schema)

    @classmethod
    def build(cls, **values: Any) -> DecodingParams:
        """From loose values (CLI, HTTP, settings): unknown names and bad types are InputError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown decoding parameter(s): {', '.join(unknown)}",
                             hint="known: " + ", ".join(sorted(known)))
        clean = {k: _coerce(k, v) for k, v in values.items() if v is not None}
        if isinstance(clean.get("stop"), str):
            clean["stop"] = (clean["stop"],)
        elif "stop" in clean:
            clean["stop"] = tuple(clean["stop"])
        try:
            return cls(**clean)
        except TypeError as exc:
            raise InputError(f"bad decoding parameters: {exc}",
                             hint="see docs/generation.md for the names and ranges") from None

    def used(self) -> frozenset[str]:
        """The knobs set away from 'off', which a backend must honour."""
        on = {
            "top_k": self.top_k > 0,
            "min_p": self.min_p > 0,
            "repetition_penalty": self.repetition_penalty != 1.0,
            "presence_penalty": self.presence_penalty != 0,
            "frequency_penalty": self.frequency_penalty != 0,
            "seed": self.seed is not None,
            "n": self.n > 1,
            "logprobs": self.logprobs or self.top_logprobs > 0,
            "stop": bool(self.stop),
            "json_schema": self.json_schema is not None,
            "bullets": self.format == "bullets",
            "num_beams": self.num_beams > 1,
            "length_penalty": self.length_penalty != 1.0,
            "early_stopping": self.early_stopping,
        }
        return frozenset(k for k, v in on.items() if v)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


def require(params: DecodingParams, backend: str, model: str) -> None:
    """Raise if `backend` cannot honour a knob `params` uses."""
    if params.num_beams > 1 and "num_beams" not in SUPPORT[backend]:
        raise InputError(
            f"beam search (num_beams={params.num_beams}) is not supported by the {backend} "
            f"backend ({model})", hint=f"{BEAM_HINT}; or use num_beams 1 and temperature 0 for "
            "deterministic output here")
    beam_only = sorted({"length_penalty", "early_stopping"} & params.used())
    if beam_only and params.num_beams == 1:
        raise InputError(f"{', '.join(beam_only)} only apply to beam search",
                         hint="set num_beams (e.g. 4), or leave them out")
    if params.num_beams > 1 and params.n > params.num_beams:
        raise InputError(f"n={params.n} candidates from {params.num_beams} beams",
                         hint="n must be at most num_beams")
    missing = sorted(params.used() - SUPPORT[backend])
    if missing:
        can = [b for b, s in SUPPORT.items() if set(missing) <= s]
        raise InputError(f"{', '.join(missing)} not supported by the {backend} backend ({model})",
                         hint="backends that can: " + (", ".join(can) or "none") +
                         "; or leave the parameter out")


def check_schema(schema: Any) -> None:
    """A JSON schema must itself be valid before it reaches a grammar compiler."""
    import jsonschema

    if not isinstance(schema, dict):
        raise InputError("the JSON schema must be a JSON object",
                         hint='e.g. {"type": "object", "properties": {...}}')
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "top level"
        raise InputError(f"invalid JSON schema at {where}: {exc.message}",
                         hint="check it against https://json-schema.org (draft 2020-12)") from None


_NUMBERS: dict[str, type] = {
    "max_tokens": int, "top_k": int, "seed": int, "n": int, "top_logprobs": int,
    "num_beams": int, "temperature": float, "length_penalty": float, "top_p": float, "min_p": float,
    "repetition_penalty": float, "presence_penalty": float, "frequency_penalty": float,
}


def _coerce(name: str, value: Any) -> Any:
    """Numbers from JSON or text; refuse what would change meaning (3.5 tokens, true)."""
    kind = _NUMBERS.get(name)
    if kind is None:
        return value
    try:
        if isinstance(value, bool) or (kind is int and float(value) != int(float(value))):
            raise ValueError
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be {'an integer' if kind is int else 'a number'}, "
                         f"got {value!r}", hint="see docs/generation.md for ranges") from None


def _check(ok: bool, message: str, hint: str) -> None:
    if not ok:
        raise InputError(message, hint=hint)
