"""What every command shares: the app, common options, opening the home, printing JSON."""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from alicerce.config import Settings
from alicerce.errors import InputError
from alicerce.generate.params import FORMATS
from alicerce.platform import Alicerce

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Alicerce: RAG assistants over your own documents, offline.",
                  rich_markup_mode=None)

HomeOpt = Annotated[Path | None, typer.Option("--home", envvar="ALICERCE_HOME",
                                              help="State directory [default: ./.alicerce]")]
CollOpt = Annotated[str, typer.Option("--collection", "-c", help="Collection name.")]
AppOpt = Annotated[str, typer.Option(
    "--app", "-a", "--collection", "-c",
    help="Deployed app (NAME, NAME@N, NAME@LABEL) or a collection answered with the defaults.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ExecutorOpt = Annotated[str | None, typer.Option(
    help="A Ray cluster's address (HOST:6379): the work runs on its workers "
         "[default: setting executor, empty = here]")]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="Bundled model, [models.NAME] entry, or .gguf path "
                          "[default: setting generator]")]


def open_home(home: Path | None, **overrides: Any) -> Alicerce:
    return Alicerce(Settings.load(home=home, **overrides))


def emit(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def _opt(kind: Any, *names: str, help: str) -> Any:
    return inspect.Parameter(names[0].lstrip("-").replace("-", "_"),
                             inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[kind | None, typer.Option(*names, help=help)])


# Every decoding parameter as a CLI option; docs/generation.md explains each.
DECODING = [
    _opt(int, "--max-tokens", help="Most tokens to generate [default: setting max_tokens]."),
    _opt(float, "--temperature", "-t", help="0 = greedy; higher = more varied."),
    _opt(int, "--top-k", help="Sample from the k likeliest tokens (0 = off)."),
    _opt(float, "--top-p", help="Nucleus: smallest set holding this probability (1 = off)."),
    _opt(float, "--min-p", help="Drop tokens under min_p x the top probability (0 = off)."),
    _opt(float, "--repetition-penalty", help="1.0 = none; 1.1 discourages repeats."),
    _opt(float, "--presence-penalty", help="-2..2, penalise tokens already present."),
    _opt(float, "--frequency-penalty", help="-2..2, penalise tokens by their count."),
    _opt(list[str], "--stop", help="Stop sequence (repeat for several)."),
    _opt(int, "--seed", help="Fixed seed: repeatable sampling."),
    _opt(int, "--n", help="Number of candidates."),
    _opt(bool, "--logprobs", help="Show each token's probability."),
    _opt(int, "--top-logprobs", help="Also show this many alternatives per token."),
    _opt(str, "--format", help="Output: " + " | ".join(FORMATS) + "."),
    _opt(Path, "--schema", help="JSON schema file the output must follow (with --format json)."),
    _opt(int, "--num-beams", help="Beam search width (the transformers backend)."),
    _opt(float, "--length-penalty", help="Beam search: >1 favours longer answers."),
    _opt(bool, "--early-stopping", help="Beam search: stop when num_beams answers are done."),
]
F = TypeVar("F", bound=Callable[..., Any])


def with_decoding(func: F) -> F:
    """Give a command every decoding option; it receives them as one `decoding` dict."""
    names = [p.name for p in DECODING]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {n: kwargs.pop(n) for n in names}
        schema = values.pop("schema")
        if schema is not None:
            values["json_schema"] = read_json(schema)
            values["format"] = values["format"] or "json"
        kwargs["decoding"] = {k: v for k, v in values.items() if v not in (None, [])}
        return func(*args, **kwargs)

    sig = inspect.signature(func, eval_str=True)
    own = [p for p in sig.parameters.values() if p.name != "decoding"]
    wrapper.__signature__ = sig.replace(parameters=own + DECODING)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**{k: v for k, v in func.__annotations__.items()
                                  if k != "decoding"},
                               **{p.name: p.annotation for p in DECODING}}
    return wrapper  # type: ignore[return-value]


def read_text(path: Path) -> str:
    """A file the user named, or an InputError saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", hint="check the path") from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}", hint="fix the file") from None
