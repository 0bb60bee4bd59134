"""Write a synthetic embedded dataset directory for benchmarking nudgekit against nudge-ft.

Layout: the embedded dataset layout of :mod:`nudgekit.dataset` (corpus.npy, corpus_ids.json,
queries.npy, query_ids.json, qrels.json, splits.json, embed_meta.json).

Model (all seeded, deterministic for a given ``--n``/``--seed``):

* **Corpus** — ``n`` unit rows of dimension ``dim`` (384), clustered so that every record
  has hard negatives: ``n / cluster_size`` random unit centres; record = normalise(centre +
  ``spread`` · z/√d), z ~ N(0, I). With ``--topics T`` the centres themselves gather around
  T random unit topics (centre = normalise(topic + ``topic_spread`` · z/√d)): neighbourhoods
  nest, as in real embeddings, so that an IVF index finds a query's neighbours (the flat
  default is adversarial for one: every cluster is equally far from every other).
  Written in blocks of 65,536 rows into a ``.npy`` made by ``open_memmap`` (mapped one
  block at a time), so the generator holds about one block
  (≈ 100 MB) plus the answers' vectors, ids and qrels: peak RSS 0.66 GB at 1M records.
* **Answers** — ``answer_frac`` (5 %) of the records, chosen at random, are relevant to
  queries; each is asked for by 1–5 queries (uniform). The other records answer nothing.
* **Queries** — the answers' query slots are shuffled and cut into queries of 1, 2 or 3
  relevant records (probabilities 0.5 / 0.3 / 0.2; duplicates within a query dropped), so a
  query has 1–3 relevant records. Each answer a also has an "intent" t_a = a + ``intent`` ·
  z/√d: what is asked about it, shared by all its queries (train, val and test alike).
  Query = normalise(normalise(mean of its answers' t_a) + ``query_noise`` · z/√d): near its
  answers but often beaten by their cluster mates (raw test NDCG@10 ≈ 0.5). Without the
  shared intent, training queries would tell nothing about held-out ones beyond the
  answer's own embedding, and NUDGE-N would rightly pick γ = 0.
* **Splits** — queries are in random order; the last ``n_test`` are test, the ``n_val``
  before them validation, the rest training, with ``n_val = n_test = min(10,000,
  round(0.2 · Q))``. For n = 100,000: ≈ 5.3k train / 1.8k val / 1.8k test; for
  n = 1,000,000: ≈ 68k train / 10k val / 10k test.

Usage::

    python bench/make_synthetic.py --n 100000            # -> bench/out/synth-100k
    python bench/make_synthetic.py --n 1000000           # -> bench/out/synth-1m
    python bench/make_synthetic.py --n 1000000 --topics 1000 --out bench/out/synth-1m-topics
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

BLOCK_ROWS = 65_536
BENCH_DIR = Path(__file__).resolve().parent


def default_name(n: int) -> str:
    """``synth-100k``, ``synth-1m`` ..."""
    if n % 1_000_000 == 0:
        return f"synth-{n // 1_000_000}m"
    if n % 1_000 == 0:
        return f"synth-{n // 1_000}k"
    return f"synth-{n}"


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def make_dataset(
    out_dir: Path,
    n: int,
    *,
    dim: int = 384,
    seed: int = 0,
    cluster_size: int = 50,
    spread: float = 0.4,
    answer_frac: float = 0.05,
    intent: float = 1.5,
    query_noise: float = 1.5,
    max_val: int = 10_000,
    topics: int = 0,
    topic_spread: float = 1.0,
) -> dict[str, object]:
    """Generate the dataset into ``out_dir``; return the summary written to embed_meta.json."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    root = np.random.SeedSequence(seed)
    s_centres, s_corpus, s_answers, s_queries = root.spawn(4)
    scale = np.float32(1.0 / np.sqrt(dim))

    # -- corpus, block by block; keep the answer rows for the queries -------------------
    n_clusters = max(1, n // cluster_size)
    rng_c = np.random.default_rng(s_centres)
    centres = _unit(rng_c.standard_normal((n_clusters, dim), dtype=np.float32))
    if topics:
        topic = _unit(rng_c.standard_normal((topics, dim), dtype=np.float32))
        centres *= np.float32(topic_spread) * np.sqrt(np.float32(dim)) * scale
        centres = _unit(centres + topic[rng_c.integers(topics, size=n_clusters)])
    rng_a = np.random.default_rng(s_answers)
    n_answers = max(1, round(answer_frac * n))
    answer_rows = np.sort(rng_a.choice(n, size=n_answers, replace=False))
    answer_vecs = np.empty((n_answers, dim), dtype=np.float32)

    corpus_path = out_dir / "corpus.npy"
    # the header and a sparse file; blocks are then written one map at a time
    open_memmap(corpus_path, mode="w+", dtype=np.float32, shape=(n, dim)).flush()
    block_seeds = s_corpus.spawn((n + BLOCK_ROWS - 1) // BLOCK_ROWS)
    for b, start in enumerate(range(0, n, BLOCK_ROWS)):
        stop = min(start + BLOCK_ROWS, n)
        rng = np.random.default_rng(block_seeds[b])
        cluster = rng.integers(n_clusters, size=stop - start)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        block *= np.float32(spread) * scale
        block += centres[cluster]
        _write_rows(corpus_path, start, _unit(block))
        lo, hi = np.searchsorted(answer_rows, [start, stop])
        answer_vecs[lo:hi] = block[answer_rows[lo:hi] - start]
    del centres

    # -- labels: each answer asked by 1-5 queries, each query has 1-3 answers -----------
    demand = rng_a.integers(1, 6, size=n_answers)
    slots = rng_a.permutation(np.repeat(np.arange(n_answers), demand))
    sizes = rng_a.choice([1, 2, 3], size=len(slots), p=[0.5, 0.3, 0.2])
    bounds = np.cumsum(sizes)
    bounds = bounds[: np.searchsorted(bounds, len(slots)) + 1]
    bounds[-1] = len(slots)
    groups = [np.unique(g) for g in np.split(slots, bounds[:-1])]
    n_queries = len(groups)

    # -- query vectors, block by block ---------------------------------------------------
    rng_q = np.random.default_rng(s_queries)
    # what is asked about an answer: its own embedding plus a per-answer "intent" offset
    # shared by all its queries (train, val and test alike), so that moving a record
    # towards its training queries can also help its held-out queries
    targets = rng_q.standard_normal((n_answers, dim), dtype=np.float32)
    targets *= np.float32(intent) * scale
    targets += answer_vecs
    del answer_vecs
    queries_path = out_dir / "queries.npy"
    # the header and a sparse file; blocks are then written one map at a time
    open_memmap(queries_path, mode="w+", dtype=np.float32, shape=(n_queries, dim)).flush()
    for start in range(0, n_queries, BLOCK_ROWS):
        part = groups[start : start + BLOCK_ROWS]
        means = np.stack([targets[g].mean(axis=0) for g in part]).astype(np.float32)
        noise = rng_q.standard_normal(means.shape, dtype=np.float32)
        _write_rows(
            queries_path, start, _unit(_unit(means) + np.float32(query_noise) * scale * noise)
        )

    # -- ids, qrels, splits --------------------------------------------------------------
    width = len(str(n - 1))
    corpus_ids = [f"d{i:0{width}d}" for i in range(n)]
    query_ids = [f"q{j:0{len(str(n_queries - 1))}d}" for j in range(n_queries)]
    qrels = {
        query_ids[j]: {corpus_ids[int(answer_rows[a])]: 1 for a in g} for j, g in enumerate(groups)
    }
    n_val = n_test = min(max_val, round(0.2 * n_queries))
    n_train = n_queries - n_val - n_test
    splits = {
        "train": query_ids[:n_train],
        "val": query_ids[n_train : n_train + n_val],
        "test": query_ids[n_train + n_val :],
    }
    _write_json(out_dir / "corpus_ids.json", corpus_ids)
    _write_json(out_dir / "query_ids.json", query_ids)
    _write_json(out_dir / "qrels.json", qrels)
    _write_json(out_dir / "splits.json", splits)

    per_answer = np.bincount(np.concatenate(groups), minlength=n_answers)
    meta: dict[str, object] = {
        "model": "synthetic (bench/make_synthetic.py)",
        "normalized": True,
        "dtype": "float32",
        "params": {
            "n": n,
            "dim": dim,
            "seed": seed,
            "cluster_size": cluster_size,
            "spread": spread,
            "answer_frac": answer_frac,
            "intent": intent,
            "query_noise": query_noise,
            "max_val": max_val,
            **({"topics": topics, "topic_spread": topic_spread} if topics else {}),
        },
        "n_answer_records": n_answers,
        "queries_per_answer": [int(per_answer.min()), int(per_answer.max())],
        "relevant_per_query": [int(min(map(len, groups))), int(max(map(len, groups)))],
        "n_queries": n_queries,
        "splits": {k: len(v) for k, v in splits.items()},
        "corpus_bytes": (out_dir / "corpus.npy").stat().st_size,
        "seconds": round(time.perf_counter() - started, 1),
    }
    _write_json(out_dir / "embed_meta.json", meta, indent=1)
    return meta


def _write_rows(path: Path, start: int, rows: np.ndarray) -> None:
    """Write ``rows`` into the ``.npy`` at ``path`` from row ``start`` on.

    The file is mapped only for this block and unmapped at once, so written pages do not
    pile up in this process's resident set (a single long-lived map would end up holding
    the whole file).
    """
    target = np.load(path, mmap_mode="r+")
    target[start : start + len(rows)] = rows
    target.flush()
    del target


def _write_json(path: Path, data: object, indent: int | None = None) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=indent)


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of records")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--answer-frac", type=float, default=0.05)
    parser.add_argument("--intent", type=float, default=1.5)
    parser.add_argument("--query-noise", type=float, default=1.5)
    parser.add_argument("--max-val", type=int, default=10_000, help="cap on val and test sizes")
    parser.add_argument("--topics", type=int, default=0, help="nest the clusters in T topics")
    parser.add_argument("--topic-spread", type=float, default=1.0)
    parser.add_argument(
        "--out", type=Path, default=None, help="output dir (default bench/out/synth-<n>)"
    )
    args = parser.parse_args()
    out = args.out or BENCH_DIR / "out" / default_name(args.n)
    meta = make_dataset(
        out,
        args.n,
        dim=args.dim,
        seed=args.seed,
        answer_frac=args.answer_frac,
        intent=args.intent,
        query_noise=args.query_noise,
        max_val=args.max_val,
        topics=args.topics,
        topic_spread=args.topic_spread,
    )
    print(f"{out}: {json.dumps(meta)}")


if __name__ == "__main__":
    main()
