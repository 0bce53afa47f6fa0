"""The adapter registry: each trained adapter an immutable, content-hashed version
(`name@N`) with the base model it belongs to, its method, data version, settings, metrics
and the run that made it; labels (`production`, `staging`) that move, with every move
logged, and rollback, as prompts and apps have.

Registering copies the adapter's files into the home under a temporary name and renames the
folder into place before the row is written, so a crash leaves either nothing registered or
a whole adapter, never a row pointing at half a folder. The same files registered again
under the same name are the same version.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alicerce.errors import InputError, NotFoundError
from alicerce.refs import split_ref
from alicerce.store.db import connect, transaction
from alicerce.store.labels import Labels
from alicerce.store.labels import schema as labels_schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS adapter_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    hash TEXT NOT NULL,
    caller TEXT NOT NULL,
    base TEXT NOT NULL,
    base_identity TEXT NOT NULL,
    method TEXT NOT NULL,
    run_id TEXT NOT NULL,
    data_version TEXT NOT NULL,
    config TEXT NOT NULL,
    metrics TEXT NOT NULL,
    path TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    PRIMARY KEY (name, version),
    UNIQUE (name, hash)
);
CREATE TABLE IF NOT EXISTS adapter_removed (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    actor TEXT NOT NULL,
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    PRIMARY KEY (name, version)
);
""" + labels_schema("adapter")
GGUF_FILE = "adapter.gguf"
OPERATOR = "local"  # who the CLI acts as
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_COLS = ("name, version, hash, caller, base, base_identity, method, run_id, data_version, "
         "config, metrics, path, created_at")


@dataclass(frozen=True)
class AdapterVersion:
    name: str
    version: int
    hash: str
    caller: str
    base: str
    base_identity: str
    method: str
    run_id: str
    data_version: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    path: Path
    created_at: str
    labels: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def as_dict(self, paths: bool = True) -> dict[str, Any]:
        """JSON for the CLI and HTTP (which leaves out where the files lie on the server)."""
        out = {"ref": self.ref, "name": self.name, "version": self.version, "hash": self.hash,
               "labels": list(self.labels), "base": self.base,
               "base_identity": self.base_identity, "method": self.method,
               "run_id": self.run_id, "data_version": self.data_version,
               "config": self.config, "metrics": self.metrics, "created_at": self.created_at,
               "caller": self.caller}
        if paths:
            gguf = self.gguf
            out |= {"path": str(self.path), "llama_cpp": str(gguf) if gguf else None}
        return out

    @property
    def gguf(self) -> Path | None:
        """The llama.cpp form (LoRA adapters are converted when registered)."""
        path = self.path / GGUF_FILE
        try:
            with path.open("rb") as fh:
                return path if fh.read(4) == b"GGUF" else None
        except OSError:
            return None


@dataclass(frozen=True)
class Lineage:
    """Where an adapter came from, recorded with it."""

    base: str
    base_identity: str
    method: str
    run_id: str
    data_version: str
    config: dict[str, Any]
    metrics: dict[str, Any]


class AdapterRegistry:
    def __init__(self, db_path: Path | str, root: Path) -> None:
        self._db = connect(db_path, SCHEMA)
        self._labels = Labels(self._db, "adapter")
        self._root = root

    def close(self) -> None:
        self._db.close()

    def register(self, name: str, files: Path, lineage: Lineage,
                 caller: str = "local") -> AdapterVersion:
        """`files` (a trained adapter's folder) as the next version of `name`, or the version
        that already holds the same files."""
        if not _NAME.match(name):
            raise InputError(f"invalid adapter name {name!r}",
                             hint="lower-case letters, digits, '.', '_' or '-' (up to 64)")
        if not files.is_dir() or not any(files.iterdir()):
            raise InputError(f"{files} is not an adapter folder", hint="give a run's adapter")
        digest = content_hash(files)
        row = self._db.execute("SELECT version FROM adapter_versions WHERE name=? AND hash=?",
                               (name, digest)).fetchone()
        self.check_name(name, caller)
        target = self._root / name / digest[:16]
        if row is not None:  # the same files: that version (restored, if it was removed)
            self._copy(files, target)
            with transaction(self._db) as db:
                db.execute("DELETE FROM adapter_removed WHERE name=? AND version=?",
                           (name, row[0]))
            return self.get(f"{name}@{row[0]}", caller)
        self._copy(files, target)
        with transaction(self._db) as db:
            version = (self._labels.latest(name) or 0) + 1
            db.execute(f"INSERT INTO adapter_versions ({_COLS.replace(', created_at', '')}) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (name, version, digest, caller, lineage.base, lineage.base_identity,
                        lineage.method, lineage.run_id, lineage.data_version,
                        json.dumps(lineage.config), json.dumps(lineage.metrics), str(target)))
        return self.get(f"{name}@{version}", caller)

    def _copy(self, files: Path, target: Path) -> None:
        """`files` at `target`, whole or not at all (renamed into place)."""
        if target.is_dir():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".incoming-"))
        try:
            shutil.copytree(files, tmp, dirs_exist_ok=True)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def get(self, ref: str, caller: str = "local") -> AdapterVersion:
        """`name`, `name@N` or `name@LABEL` (a bare name: production, else the newest)."""
        name, at = split_ref(ref)
        version = self._labels.resolve(name, at)
        row = None if version is None else self._db.execute(
            f"SELECT {_COLS} FROM adapter_versions WHERE name=? AND version=?",
            (name, version)).fetchone()
        if row is None or not _visible(row[3], caller):
            raise NotFoundError(f"no adapter {ref!r}", hint=self._hint(name, caller))
        gone = self._db.execute("SELECT actor, at FROM adapter_removed WHERE name=? AND "
                                "version=?", (name, version)).fetchone()
        if gone is not None:
            raise NotFoundError(f"adapter {name}@{version} was removed ({gone[1]}, by {gone[0]})",
                                hint="name another version (alicerce adapters list); an app "
                                     "pinned to it needs deploying again with another")
        return self._build(row)

    def remove(self, ref: str, caller: str = "local") -> AdapterVersion:
        """Remove a version: its files are deleted, its number is never given again (traces
        name it), and servers drop it at their next swap. A labelled one is refused."""
        adapter = self.get(ref, caller)
        if adapter.labels:
            raise InputError(f"{adapter.ref} is labelled {', '.join(adapter.labels)}",
                             hint=f"move the label first: alicerce adapters label "
                                  f"{adapter.name}@N {adapter.labels[0]}")
        with transaction(self._db) as db:
            db.execute("INSERT INTO adapter_removed (name, version, actor) VALUES (?, ?, ?)",
                       (adapter.name, adapter.version, caller))
        # committed first: a crash here leaves a folder nothing points at, never a version
        # that points at no files (a folder is one version's: NAME/HASH, and NAME+HASH is
        # unique)
        shutil.rmtree(adapter.path, ignore_errors=True)
        return adapter

    def servable(self, ref: str, caller: str) -> AdapterVersion:
        """The adapter a request of `caller` may be answered with: its own, or the home
        operator's (trained from the CLI: shared like a deployed app)."""
        try:
            return self.get(ref, caller)
        except NotFoundError:
            if caller == OPERATOR:
                raise
            return self.get(ref, OPERATOR)

    def servable_list(self, caller: str) -> list[AdapterVersion]:
        return [a for a in self.list("admin")
                if a.caller in (caller, OPERATOR) or caller == "admin"]

    def list(self, caller: str = "local") -> list[AdapterVersion]:
        """Every version the caller may see, by name then version."""
        rows = self._db.execute(
            f"SELECT {_COLS} FROM adapter_versions v WHERE NOT EXISTS (SELECT 1 FROM "
            "adapter_removed r WHERE r.name=v.name AND r.version=v.version) "
            "ORDER BY name, version")
        return [self._build(r) for r in rows if _visible(r[3], caller)]

    def labelled(self, name: str, label: str, caller: str = "local") -> AdapterVersion | None:
        """The version `label` points at now, if any."""
        version = self._labels.target(name, label)
        return None if version is None else self.get(f"{name}@{version}", caller)

    def label(self, ref: str, label: str, caller: str = "local") -> AdapterVersion:
        adapter = self.get(ref, caller)
        with transaction(self._db) as db:
            self._labels.move(db, adapter.name, label, adapter.version, caller)
        return self.get(adapter.ref, caller)

    def rollback(self, name: str, label: str = "production",
                 caller: str = "local") -> tuple[AdapterVersion, int]:
        """Move `label` back to the newest older version it pointed at: (now, left)."""
        self.get(name, caller)  # exists and is the caller's
        current = self._labels.target(name, label)
        if current is None:
            raise NotFoundError(f"adapter {name!r} has no {label!r} label",
                                hint=self._hint(name, caller))
        earlier = self._labels.earlier(name, label, current)
        if earlier is None:
            raise InputError(f"{name}@{label} is version {current}; no older version was ever "
                             f"labelled {label}",
                             hint=f"label one yourself: alicerce adapters label {name}@N {label}")
        return self.label(f"{name}@{earlier}", label, caller), current

    def diff(self, a: str, b: str, caller: str = "local") -> dict[str, tuple[Any, Any]]:
        """Settings, metrics and lineage that differ between two versions."""
        left, right = self.get(a, caller), self.get(b, caller)

        def flat(x: AdapterVersion) -> dict[str, Any]:
            return {"base": x.base, "base_identity": x.base_identity, "method": x.method,
                    "data_version": x.data_version, "run_id": x.run_id,
                    **{f"config.{k}": v for k, v in x.config.items()},
                    **{f"metrics.{k}": v for k, v in x.metrics.items()}}

        fl, fr = flat(left), flat(right)
        return {k: (fl.get(k), fr.get(k)) for k in sorted({*fl, *fr}) if fl.get(k) != fr.get(k)}

    def check_name(self, name: str, caller: str) -> None:
        """Refuse a name another caller's adapters already use (before training for it)."""
        row = self._db.execute("SELECT caller FROM adapter_versions WHERE name=? LIMIT 1",
                               (name,)).fetchone()
        if row is not None and not _visible(row[0], caller):
            raise InputError(f"adapter name {name!r} belongs to another caller",
                             hint="choose another name")

    def _build(self, row: sqlite3.Row | tuple[Any, ...]) -> AdapterVersion:
        name, version = str(row[0]), int(row[1])
        return AdapterVersion(name, version, row[2], row[3], row[4], row[5], row[6], row[7],
                              row[8], json.loads(row[9]), json.loads(row[10]), Path(row[11]),
                              row[12], self._labels.on(name, version))

    def _hint(self, name: str, caller: str) -> str:
        names = sorted({a.name for a in self.list(caller)})
        return ((self._labels.describe(name) if name in names else None)
                or "adapters: " + (", ".join(names) or "none yet; `alicerce tune run` makes one"))


PEFT_METHODS = ("lora", "pretrain", "ia3", "prompt")  # PEFT adapter folders


def check_adapter(adapter: AdapterVersion, model: str, identity: str,
                  backend: str = "llama.cpp") -> None:
    """Refuse an adapter `backend` cannot run, or one trained on other weights."""
    if backend == "llama.cpp" and adapter.gguf is None:
        raise InputError(f"adapter {adapter.ref} ({adapter.method}) does not run on llama.cpp",
                         hint="only LoRA adapters do: serve it on the transformers backend "
                              "([models.NAME] path = BASE, backend = \"transformers\"), or "
                              "train one with --method lora")
    if backend == "transformers" and adapter.method not in PEFT_METHODS:
        raise InputError(f"adapter {adapter.ref} ({adapter.method}) is not a PEFT adapter",
                         hint="a fully tuned model is a model: name its folder as a model's "
                              "path")
    if adapter.base_identity != identity:
        raise InputError(f"adapter {adapter.ref} was trained on {adapter.base} "
                         f"({adapter.base_identity[:19]}…), not on {model} ({identity[:19]}…)",
                         hint=f"answer with model {adapter.base}, or train an adapter on "
                              f"{model}")


def _visible(owner: str, caller: str) -> bool:
    return caller == "admin" or owner == caller


def content_hash(folder: Path) -> str:
    """sha256 over the folder's files (relative names and bytes, in name order)."""
    digest = hashlib.sha256()
    for p in sorted(x for x in folder.rglob("*") if x.is_file()):
        digest.update(p.relative_to(folder).as_posix().encode() + b"\0")
        with p.open("rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()
