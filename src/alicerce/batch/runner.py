"""Running a chain app over a JSONL or CSV file, resumably.

The output file is the job's memory: one JSON line per finished row (its outputs or its
error), each appended with a single write, so a `kill -9` leaves whole lines plus at most
one partial last line. Resuming cuts that partial line, reads which rows are done, and runs
only the rest: no row is lost and none is written twice. Rows run `concurrency` at a time
through `submit` (the server passes its work queue, the CLI runs them directly); a bad row
gets an error line and the job goes on.
"""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from alicerce.apps.registry import AppVersion
from alicerce.batch.jobs import BatchJob, BatchJobs
from alicerce.chains.spec import ChainSpec
from alicerce.errors import (
    AlicerceError,
    BusyError,
    ChainError,
    GeneratorError,
    InputError,
)

if TYPE_CHECKING:
    from alicerce.batch.ray_rows import ChainRow, RayRows
    from alicerce.platform import Alicerce

T = TypeVar("T")
Submit = Callable[[Callable[[], T]], T]
MAX_ROWS = 100_000
_FORMATS = (".jsonl", ".csv")


@dataclass(frozen=True)
class Row:
    n: int  # 1-based, in file order
    custom_id: str | None
    inputs: dict[str, Any] | None
    problem: str = ""  # why the row could not be read


def check_paths(input_: Path, output: Path) -> None:
    """Refuse what would fail or clobber, before a job is created."""
    if input_.suffix.lower() not in _FORMATS:
        raise InputError(f"{input_}: the input must be .jsonl or .csv",
                         hint="one JSON object of inputs per line, or a CSV with a header "
                              "naming the inputs")
    if not input_.is_file():
        raise InputError(f"no input file {input_}", hint="give the path of a JSONL/CSV file")
    if output.resolve() == input_.resolve():
        raise InputError("the output would overwrite the input", hint="pick another --output")
    if not output.parent.is_dir():
        raise InputError(f"no folder {output.parent} for the output",
                         hint="create it, or pick another --output")


def count_rows(path: Path) -> int:
    n = sum(1 for _ in _raw(path))
    if n > MAX_ROWS:
        raise InputError(f"{path} has {n} rows, over the limit of {MAX_ROWS}",
                         hint="split the file")
    if n == 0:
        raise InputError(f"{path} has no rows", hint="one JSON object per line, or CSV rows")
    return n


def _raw(path: Path) -> Iterator[tuple[int, Any]]:
    """(row number, the JSON object or CSV dict, or the text that is not one)."""
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            for n, rec in enumerate(csv.DictReader(f), 1):
                yield n, rec
        return
    with path.open(encoding="utf-8", errors="replace") as f:
        n = 0
        for line in f:
            if not line.strip():
                continue
            n += 1
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as exc:
                yield n, f"not JSON: {exc.msg} at character {exc.pos}"


def read_rows(path: Path, spec: ChainSpec) -> Iterator[Row]:
    csv_file = path.suffix.lower() == ".csv"
    for n, rec in _raw(path):
        if isinstance(rec, str):
            yield Row(n, None, None, rec)
        elif not isinstance(rec, dict):
            yield Row(n, None, None, "a row must be a JSON object of inputs")
        else:
            yield _row(n, rec, spec, csv_file)


def _row(n: int, rec: dict[str, Any], spec: ChainSpec, csv_file: bool) -> Row:
    """Inputs from a row: an object of inputs, `{custom_id, inputs}`, or the OpenAI Batch
    API's `{custom_id, method, url, body}` (body.inputs, or body.messages for a chain with
    one text input)."""
    cid = rec.get("custom_id")
    cid = str(cid)[:200] if cid is not None else None
    if csv_file:
        return _csv_row(n, cid, rec, spec)
    body = rec.get("body")
    if isinstance(body, dict):
        if isinstance(body.get("inputs"), dict):
            return Row(n, cid, body["inputs"])
        texts = text_inputs(spec)
        messages = body.get("messages")
        if isinstance(messages, list) and messages and len(texts) == 1:
            last = messages[-1]
            if isinstance(last, dict) and isinstance(last.get("content"), str):
                return Row(n, cid, {texts[0]: last["content"]})
        return Row(n, cid, None, "body needs `inputs` (an object), or `messages` for a "
                                 "chain with one required text input")
    if isinstance(rec.get("inputs"), dict):
        return Row(n, cid, rec["inputs"])
    return Row(n, cid, {k: v for k, v in rec.items()
                        if k != "custom_id" or "custom_id" in spec.inputs})


def text_inputs(spec: ChainSpec) -> list[str]:
    """The required text inputs: a chat message can fill a chain that has exactly one."""
    return [k for k, i in spec.inputs.items()
            if i.type == "string" and i.required and i.default is None]


def _csv_row(n: int, cid: str | None, rec: dict[str, Any], spec: ChainSpec) -> Row:
    out: dict[str, Any] = {}
    for k, v in rec.items():
        if k is None or (k == "custom_id" and k not in spec.inputs):
            continue
        kind = spec.inputs[k].type if k in spec.inputs else "string"
        try:
            out[k] = (v if kind in ("string", "any") or v in (None, "")
                      else json.loads(v) if kind in ("list", "object", "passages")
                      else v.strip().lower() in ("1", "true", "yes") if kind == "boolean"
                      else int(v) if kind == "integer" else float(v))
        except ValueError:
            return Row(n, cid, None, f"column {k!r}: {v!r} is not {kind}")
    return Row(n, cid, {k: v for k, v in out.items() if v not in (None, "")})


def recover(output: Path) -> dict[int, bool]:
    """Rows the output file already holds (row -> succeeded), after cutting a partial last
    line left by a killed process."""
    if not output.exists():
        return {}
    data = output.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        with output.open("r+b") as f:
            f.truncate(end)
    done: dict[int, bool] = {}
    for line in data[:end].splitlines():
        rec = json.loads(line)
        done[int(rec["row"])] = rec.get("error") is None
    return done


_CODES = ((InputError, "invalid_input"), (GeneratorError, "model_error"),
          (ChainError, "chain_error"))


def _code(exc: AlicerceError) -> str:
    return next((c for cls, c in _CODES if isinstance(exc, cls)), "error")


class BatchRunner:
    def __init__(self, alc: Alicerce, jobs: BatchJobs, submit: Submit[Any] | None = None,
                 rows: RayRows | None = None) -> None:
        self.alc, self.jobs = alc, jobs
        self.submit: Submit[Any] = submit or (lambda fn: fn())
        self.rows = rows  # rows on a Ray cluster instead of here (batch/ray_rows.py)
        self._lock = threading.Lock()

    def width(self, job: BatchJob) -> int:
        """Rows in flight: the job's concurrency here, one per worker on a cluster."""
        return job.concurrency if self.rows is None else max(job.concurrency,
                                                             len(self.rows.workers))

    def run(self, job: BatchJob, progress: Callable[[int, int], None] | None = None
            ) -> BatchJob:
        """Run (or resume) `job` to its end, a cancel, or a failure of the job itself."""
        version = self.alc.apps.get(job.ref)  # pinned: a resumed job keeps its version
        spec = self.alc.chains.plan(version).spec
        out_path, in_path = Path(job.output), Path(job.input)
        try:
            total = count_rows(in_path)
            done = recover(out_path)
        except (OSError, InputError, ValueError) as exc:
            self.jobs.finish(job.id, "failed", f"cannot read the files: {exc}")
            return self.jobs.get(job.id)
        self.jobs.start(job.id, total)
        ok, bad = sum(done.values()), sum(not v for v in done.values())
        busy0, t0, last = job.busy_s, time.monotonic(), 0.0
        cancelled = False
        fd = os.open(out_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            width = self.width(job)
            with ThreadPoolExecutor(width, thread_name_prefix="alicerce-batch") as pool:
                running: set[Future[bool]] = set()
                for row in read_rows(in_path, spec):
                    if row.n in done:
                        continue
                    while len(running) >= width:
                        finished, running = _settle(running)
                        ok, bad = ok + sum(finished), bad + len(finished) - sum(finished)
                    running.add(pool.submit(self._one, fd, job, version, row))
                    if progress:
                        progress(ok + bad, total)
                    if time.monotonic() - last >= 1.0:
                        last = time.monotonic()
                        if self.jobs.progress(job.id, ok, bad, busy0 + last - t0):
                            cancelled = True
                            break
                while running:
                    finished, running = _settle(running)
                    ok, bad = ok + sum(finished), bad + len(finished) - sum(finished)
        except OSError as exc:
            self.jobs.progress(job.id, ok, bad, busy0 + time.monotonic() - t0)
            self.jobs.finish(job.id, "failed", f"cannot write {out_path}: {exc.strerror}")
            return self.jobs.get(job.id)
        finally:
            os.close(fd)
        if progress:
            progress(ok + bad, total)
        # a cancel asked for while the last rows ran (or by a revoked key) still counts
        cancelled = self.jobs.progress(job.id, ok, bad, busy0 + time.monotonic() - t0) \
            or cancelled
        self.jobs.finish(job.id, "cancelled" if cancelled else "done")
        return self.jobs.get(job.id)

    def _one(self, fd: int, job: BatchJob, version: AppVersion, row: Row) -> bool:
        """Run one row and append its line; whether it succeeded."""
        rec: dict[str, Any] = {"row": row.n, "custom_id": row.custom_id}
        if row.inputs is None:
            rec.update(outputs=None, error={"code": "invalid_row", "message": row.problem})
        else:
            inputs, origin = row.inputs, f"batch:{job.id}"
            try:
                got = self._retrying(lambda: self._chain(row.n, version, inputs, job.caller,
                                                         origin))
                rec.update(outputs=got.outputs, blocked=got.blocked or None,
                           trace_id=got.trace_id, error=None)
            except AlicerceError as exc:
                rec.update(outputs=None, error={"code": _code(exc), "message": str(exc)})
        line = (json.dumps(rec, ensure_ascii=False, default=str) + "\n").encode()
        with self._lock:
            os.write(fd, line)  # one write: a kill leaves whole lines, or one partial last
        return rec["error"] is None

    def _chain(self, n: int, version: AppVersion, inputs: dict[str, Any], caller: str,
               origin: str) -> ChainRow:
        if self.rows is not None:
            return self.rows.run(n, version.ref, inputs, caller, origin)
        from alicerce.batch.ray_rows import ChainRow

        r = self.alc.chains.run(version, inputs, caller=caller, origin=origin)
        return ChainRow(r.outputs, r.blocked, r.trace_id, r.usage.prompt_tokens,
                        r.usage.completion_tokens)

    def _retrying(self, fn: Callable[[], T]) -> T:
        """A busy queue is waited out, not counted as the row's failure."""
        while True:
            try:
                result: T = self.submit(fn)
                return result
            except BusyError as exc:
                time.sleep(min(max(exc.retry_after, 0.5), 30.0))


def runner(alc: Alicerce, submit: Submit[Any] | None = None) -> BatchRunner:
    """Rows here (through `submit`), or on the Ray cluster the setting `executor` names."""
    if not alc.settings.executor:
        return BatchRunner(alc, alc.batches, submit)
    from alicerce.batch.ray_rows import on_cluster

    return BatchRunner(alc, alc.batches, submit, rows=on_cluster(alc.settings))


def _settle(running: set[Future[bool]]) -> tuple[list[bool], set[Future[bool]]]:
    finished, left = wait(running, return_when=FIRST_COMPLETED)
    return [f.result() for f in finished], set(left)
