"""API keys: created by an admin, shown once, stored only as salted hashes; and the audit log.

A key reads `alc-<id>-<secret>`. The id finds the row; the secret is checked against
sha256(salt + secret) in constant time. Keys carry 32 random bytes, so a fast hash is as safe
as a slow KDF here and keeps the check off the request's latency (a KDF costs ~50 ms).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from alicerce.errors import AccessError, ForbiddenError, InputError, NotFoundError
from alicerce.store.db import connect, transaction

Scope = Literal["ask", "ingest", "admin", "read", "models", "unguarded"]
# read: see everything admin sees (every caller's traces, runs, jobs, keys, the audit log)
# and change nothing; models: raw models (no retrieval), which collection-restricted keys get
# only when granted; unguarded: raw-model requests skip the default rails (never implied,
# not even by admin).
SCOPES: tuple[Scope, ...] = ("ask", "ingest", "admin", "read", "models", "unguarded")

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    scopes TEXT NOT NULL,
    collections TEXT,
    rpm INTEGER NOT NULL,
    tpm INTEGER NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class ApiKey:
    """What a key may do. `collections` None means every collection (and app)."""

    id: str
    name: str
    scopes: tuple[Scope, ...]
    collections: tuple[str, ...] | None
    rpm: int
    tpm: int
    created_at: float
    revoked_at: float | None = None

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise ForbiddenError(f"key {self.id} ({self.name}) lacks the {scope!r} scope",
                                 hint=f"create a key with --scopes {scope}")

    def require_any(self, *scopes: Scope) -> None:
        """One of `scopes` (admin implies each): e.g. a trace list for `ask` (own) or
        `read` (everyone's)."""
        if "admin" not in self.scopes and not set(scopes) & set(self.scopes):
            raise ForbiddenError(f"key {self.id} ({self.name}) lacks the "
                                 f"{' or '.join(repr(s) for s in scopes)} scope",
                                 hint=f"create a key with --scopes {scopes[0]}")

    @property
    def sees_all(self) -> bool:
        """Admin and read keys see every caller's objects (within their collections)."""
        return "admin" in self.scopes or "read" in self.scopes

    @property
    def owner(self) -> str | None:
        """The caller whose objects this key lists: None (everyone's) for admin and read."""
        return None if self.sees_all else self.id

    def require_models(self) -> None:
        """Raw models answer without the documents' boundaries: a key restricted to some
        collections calls them only with the `models` scope; an unrestricted `ask` key may."""
        if self.collections is not None or "ask" not in self.scopes:
            self.require("models")

    @property
    def guarded(self) -> bool:
        """Whether the default rails apply to this key's raw-model requests."""
        return "unguarded" not in self.scopes

    def may_use(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def require_collection(self, collection: str) -> None:
        if not self.may_use(collection):
            raise ForbiddenError(f"key {self.id} ({self.name}) may not use {collection!r}",
                                 hint="use a key created with --collections " + collection)

    @property
    def scope_id(self) -> str:
        """Who may share cached answers: keys that see exactly the same collections."""
        return "*" if self.collections is None else ",".join(sorted(self.collections))


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


class KeyStore:
    def __init__(self, path: Path | str) -> None:
        self._db = connect(path, SCHEMA)

    def create(self, name: str, scopes: Sequence[str], collections: Sequence[str] | None = None,
               rpm: int = 60, tpm: int = 100_000, actor: str = "cli") -> tuple[ApiKey, str]:
        """(the key's record, the secret to hand over): the secret is never stored."""
        if not name.strip() or len(name) > 64:
            raise InputError(f"invalid key name {name!r}", hint="1 to 64 characters")
        bad = [s for s in scopes if s not in SCOPES]
        if bad or not scopes:
            raise InputError(f"unknown scope(s) {', '.join(bad) or '(none given)'}",
                             hint="choose from " + ", ".join(SCOPES))
        if rpm < 1 or tpm < 1:
            raise InputError("rate limits must be at least 1",
                             hint="e.g. --rpm 60 --tpm 100000")
        colls = tuple(sorted(set(collections))) if collections else None
        key = ApiKey(secrets.token_hex(4), name.strip(),
                     tuple(cast(Scope, s) for s in dict.fromkeys(scopes)), colls, rpm, tpm,
                     time.time())
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        with transaction(self._db) as db:
            db.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                       (key.id, key.name, salt, _digest(salt, secret), json.dumps(key.scopes),
                        json.dumps(colls) if colls is not None else None, rpm, tpm,
                        key.created_at))
            _audit(db, actor, "key.create", key.id,
                   {"name": key.name, "scopes": key.scopes, "collections": colls,
                    "rpm": rpm, "tpm": tpm})
        return key, f"alc-{key.id}-{secret}"

    def verify(self, presented: str) -> ApiKey:
        """The key's record; AccessError for anything malformed, unknown or revoked."""
        parts = presented.split("-", 2)
        if len(parts) != 3 or parts[0] != "alc":
            raise AccessError("the API key is malformed",
                              hint="send 'Authorization: Bearer alc-...' with a key from "
                                   "`alicerce keys create`")
        row = self._db.execute("SELECT * FROM api_keys WHERE id=?", (parts[1],)).fetchone()
        if row is None or not hmac.compare_digest(_digest(bytes(row[2]), parts[2]),
                                                  bytes(row[3])):
            raise AccessError("the API key is not valid", hint="check it, or create a new one")
        key = _key(row)  # one query: on a shared database each is a round trip
        if key.revoked_at is not None:
            raise AccessError(f"the API key {key.id} was revoked", hint="create a new one")
        return key

    def get(self, key_id: str) -> ApiKey:
        row = self._db.execute("SELECT * FROM api_keys WHERE id=?", (key_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no API key with id {key_id!r}", hint="see `alicerce keys list`")
        return _key(row)

    def all(self) -> list[ApiKey]:
        return [_key(r) for r in self._db.execute("SELECT * FROM api_keys ORDER BY created_at")]

    def revoke(self, key_id: str, actor: str = "cli") -> ApiKey:
        key = self.get(key_id)
        if key.revoked_at is None:
            with transaction(self._db) as db:
                db.execute("UPDATE api_keys SET revoked_at=? WHERE id=?", (time.time(), key_id))
                _audit(db, actor, "key.revoke", key_id, {"name": key.name})
        return self.get(key_id)

    def audit(self, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
        with transaction(self._db) as db:
            _audit(db, actor, action, target, detail)

    def audit_log(self, limit: int = 100) -> list[AuditEntry]:
        rows = self._db.execute("SELECT * FROM audit_log ORDER BY seq DESC LIMIT ?", (limit,))
        return [AuditEntry(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]

    def close(self) -> None:
        self._db.close()


def _digest(salt: bytes, secret: str) -> bytes:
    return hashlib.sha256(salt + secret.encode()).digest()


def _key(row: Any) -> ApiKey:
    colls = json.loads(row[5]) if row[5] is not None else None
    return ApiKey(row[0], row[1], tuple(json.loads(row[4])),
                  tuple(colls) if colls is not None else None, row[6], row[7], row[8], row[9])


def _audit(db: Any, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
    db.execute("INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
               (time.time(), actor, action, target, json.dumps(detail, ensure_ascii=False)))
