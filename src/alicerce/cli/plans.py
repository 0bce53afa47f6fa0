"""Printing a compiled chain plan (`alicerce apps show APP --plan`)."""

from __future__ import annotations

import json
from typing import Any

import typer

from alicerce.chains.describe import plan_rows
from alicerce.chains.plan import Plan


def print_plan(p: Plan) -> None:
    typer.echo("inputs:  " + ", ".join(f"{k}: {i.type}" for k, i in p.spec.inputs.items()))

    def show(rows: list[dict[str, Any]], depth: int) -> None:
        for r in rows:
            what = " ".join(str(r[k]) for k in ("stage", "model", "adapter", "prompt",
                                                "reranker", "function") if k in r)
            if "collections" in r:
                what += " " + ",".join(r["collections"]) + (f" k={r['k']}" if "k" in r else "")
            if "rails" in r:
                what += " rails: " + ", ".join(map(str, r["rails"]))
            if "tools" in r:
                what += " tools: " + ", ".join(r["tools"]) + " " + " ".join(
                    f"{k}={v}" for k, v in r["limits"].items())
            if "grounded" in r:
                what += " grounded: " + ", ".join(f"{k}={v}" for k, v in r["grounded"].items())
            typer.echo(f"{'  ' * depth}- {r['id']} ({r['kind']}) {what}".rstrip())
            if "inputs" in r:
                typer.echo(f"{'  ' * depth}    in:  " + json.dumps(r["inputs"],
                                                               ensure_ascii=False)[:200])
            typer.echo(f"{'  ' * depth}    out: " + ", ".join(
                f"{k}: {t}" for k, t in r["outputs"].items()))
            for key in ("steps", "then", "else"):
                if key in r:
                    typer.echo(f"{'  ' * depth}    {key}:")
                    show(r[key], depth + 2)
    show(plan_rows(p.nodes), 0)
    typer.echo("outputs: " + ", ".join(f"{k}: {t.type}" for k, t in p.output_types.items()))
