"""SIGKILL an ingest half-way (a real subprocess), then show nothing was corrupted or lost."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from alicerce import Alicerce, Settings


def corpus(folder: Path, files: int = 12, per_file: int = 800) -> None:
    folder.mkdir()
    for f in range(files):
        with (folder / f"part{f:02d}.jsonl").open("w") as fh:
            for r in range(per_file):
                words = " ".join(f"w{(f * 7919 + r * 31 + i) % 5000}" for i in range(60))
                fh.write(json.dumps({"id": f"{f}-{r}", "text": words, "part": f}) + "\n")


def chunk_count(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute("SELECT count(*) FROM chunks").fetchone()[0])
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


def ingest_cmd(folder: Path) -> list[str]:
    return [sys.executable, "-m", "alicerce", "ingest", str(folder), "-c", "kb"]


def state(home: Path) -> tuple[list[tuple[str, str]], list[tuple[str, int, str]], str]:
    con = sqlite3.connect(home / "alicerce.db")
    docs = con.execute("SELECT key, content_hash FROM documents ORDER BY key").fetchall()
    chunks = con.execute("SELECT d.key, c.ordinal, c.content_hash FROM chunks c JOIN documents "
                         "d ON d.id = c.document_id ORDER BY 1, 2").fetchall()
    check = con.execute("PRAGMA integrity_check").fetchone()[0]
    con.close()
    return docs, chunks, check


def test_sigkill_mid_ingest_then_resume(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    corpus(folder)
    home = tmp_path / "killed"
    env = {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_EMBEDDER": "hashing"}
    proc = subprocess.Popen(ingest_cmd(folder), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while chunk_count(home / "alicerce.db") < 1500 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = chunk_count(home / "alicerce.db")
    assert 0 < partial < 12 * 800, "the kill must land half-way"

    docs, _chunks, check = state(home)
    assert check == "ok"
    resumed = subprocess.run(ingest_cmd(folder), env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(docs)} unchanged" in resumed.stdout  # committed work was kept

    clean = tmp_path / "clean"
    subprocess.run(ingest_cmd(folder), env={**env, "ALICERCE_HOME": str(clean)}, check=True,
                   capture_output=True, timeout=300)
    k_docs, k_chunks, k_check = state(home)
    c_docs, c_chunks, _ = state(clean)
    assert k_check == "ok"
    assert len(k_chunks) == len(set(k_chunks)) == len(c_chunks)  # no duplicate chunks
    assert (k_docs, k_chunks) == (c_docs, c_chunks)
    settings = Settings.load(home=home, embedder="hashing")
    with Alicerce(settings) as alc, Alicerce(settings.model_copy(update={"home": clean})) as ref:
        assert alc.collections()[0].version == ref.collections()[0].version
        q = "w10 w20 w30"
        assert ([h.doc_key for h in alc.search(q, "kb", mode="sparse", k=10)]
                == [h.doc_key for h in ref.search(q, "kb", mode="sparse", k=10)])
        # Dense: the (approximate) HNSW graphs differ with insertion order, so compare the
        # exact path, which a filter selects, and the scores (hashing vectors have many ties).
        every = {"part": [str(p) for p in range(12)]}
        got = [h.score for h in alc.search(q, "kb", mode="dense", k=5, filters=every)]
        want = [h.score for h in ref.search(q, "kb", mode="dense", k=5, filters=every)]
        assert got == pytest.approx(want, abs=1e-3)


def test_sigkill_mid_update_leaves_a_version_that_names_what_is_stored(tmp_path: Path) -> None:
    """Issue 16 item 8: killed while re-ingesting an edited folder, the collection reported
    the old version and counts while the store held the new chunks."""
    folder = tmp_path / "docs"
    corpus(folder, files=6)
    home = tmp_path / "home"
    env = {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_EMBEDDER": "hashing"}
    subprocess.run(ingest_cmd(folder), env=env, check=True, capture_output=True, timeout=300)
    with Alicerce(Settings.load(home=home, embedder="hashing")) as alc:
        before = alc.collections()[0].version
    for f in range(6):  # every record edited: a long update
        path = folder / f"part{f:02d}.jsonl"
        path.write_text(path.read_text().replace('"text": "', '"text": "edited '))
    proc = subprocess.Popen(ingest_cmd(folder), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    con = sqlite3.connect(home / "alicerce.db", timeout=5)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        edited = con.execute("SELECT count(*) FROM chunks WHERE text LIKE 'edited%'").fetchone()
        if edited[0] >= 800:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    edited = con.execute("SELECT count(*) FROM chunks WHERE text LIKE 'edited%'").fetchone()[0]
    con.close()
    assert 0 < edited < 6 * 800, "the kill must land half-way"
    with Alicerce(Settings.load(home=home, embedder="hashing")) as alc:
        info = alc.collections()[0]
        versions = alc.store.versions(alc.store.collection("kb"))  # type: ignore[arg-type]
        assert info.version != before  # the committed half is a version of its own
        assert versions[-1]["id"] == info.version
        assert versions[-1]["chunks"] == info.chunks == chunk_count(home / "alicerce.db")
        mid = info.version
    resumed = subprocess.run(ingest_cmd(folder), env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    with Alicerce(Settings.load(home=home, embedder="hashing")) as alc:
        done = alc.collections()[0]
        assert done.version not in (before, mid) and done.documents == 6 * 800


def test_upload_job_survives_a_killed_server(tmp_path: Path) -> None:
    """Issue 16 item 9: killing the server during an upload job lost the job (404 after the
    restart), left documents without a version and the files in the temporary folder."""
    from alicerce.testing.procs import serving

    home = tmp_path / "home"
    env = {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_EMBEDDER": "hashing",
           "ALICERCE_GENERATOR": "smollm2-135m", "ALICERCE_GUARDS": "{}",
           "ALICERCE_LLM_CONTEXT": "2048"}
    rows = "".join(json.dumps({"id": str(r), "text": " ".join(
        f"w{(r * 31 + i) % 5000}" for i in range(60))}) + "\n" for r in range(12000))
    files = {"big.jsonl": rows.encode(), "policy.md": b"# Policy\n\nReceipts in 30 days.\n"}
    boundary = "alicerce-test"
    body = b"".join(
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{n}\""
        f"\r\nContent-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        for n, data in files.items()) + f"--{boundary}--\r\n".encode()

    def call(base: str, path: str, data: bytes | None = None) -> dict[str, object]:
        req = urllib.request.Request(base + path, data=data, headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}"} if data else {})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    with serving(env, tmp_path / "one.log", "--no-auth") as (base, proc):
        job = call(base, "/v1/collections/kb/documents", body)
        deadline = time.monotonic() + 120
        while chunk_count(home / "alicerce.db") < 2000 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 0 < chunk_count(home / "alicerce.db") < 12001
    assert list((home / "uploads").iterdir()) == [home / "uploads" / str(job["id"])]
    with serving(env, tmp_path / "two.log", "--no-auth") as (base, _):
        deadline = time.monotonic() + 240
        state: dict[str, object] = {}
        while time.monotonic() < deadline:
            state = call(base, f"/v1/collections/kb/jobs/{job['id']}")
            if state["state"] in ("done", "failed"):
                break
            time.sleep(0.2)
        assert state["state"] == "done" and state["resumed"] == 1, state
        cols = call(base, "/v1/collections")["data"]
    assert cols[0]["documents"] == 12001  # type: ignore[index]
    assert not any((home / "uploads").iterdir())  # the job's files went with it
    with Alicerce(Settings.load(home=home, embedder="hashing")) as alc:
        coll = alc.store.collection("kb")
        assert coll is not None and alc.store.versions(coll)[-1]["documents"] == 12001
