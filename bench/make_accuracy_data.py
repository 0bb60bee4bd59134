"""Synthetic datasets with known structure for the accuracy study (docs/results.md), in
nudgekit's embedded layout (OUT/<name>/).

Generative model (all vectors L2-normalised):
  cluster centres c_k ~ N(0, I); records x = norm(c_k + s·ε) (near-duplicate distractors);
  each *labelled unit* u (a record, or a group of records for syn_multi) has a hidden query
  centre m_u = norm(x_u + b·w_u) with w_u a random direction: b sets the record–query angle
  (the systematic mismatch NUDGE corrects); its queries are q = norm(m_u + σ·ε).
  ε ~ N(0, I/d) (norm ≈ 1). Splits as for the shared data: sorted ids shuffled with
  random.Random(0); val = 10 %, test = 20 %, train = the rest.

  syn_many : 30k records, d=128; 2,500 labelled records with 1+Poisson(9) queries each
             (many training queries per record), small angle (b=0.5); spread s=0.2, σ=1.5.
  syn_wide : 50k records, d=64; 15,000 labelled records with 1 query (70 %) or 2 (30 %)
             (about one training query per record), large angle (b=1.6); s=0.6, σ=0.5.
  syn_multi: 40k records, d=256; 4,000 groups of 1–6 records (centre + spread), 1+Poisson(2)
             queries per group, each relevant to the whole group: grade 2 for the group's first
             record, 1 for the others (multi-positive, graded), medium angle (b=0.9); s=0.35,
             members = norm(seed + 0.3·ε), σ=1.2.

  syn_mixed: 30k records, d=128; 4,000 labelled records with Zipf(1.8) query counts capped
             at 40 (half have 1 query, a tail has tens: heterogeneous n), large angle (b=1.2);
             s=0.3, σ=1.0; own seed 1.
  syn_mixhard: syn_mixed with σ=1.6 (added after syn_mixed saturated for records with many queries).

Usage: python bench/make_accuracy_data.py [--out bench/out/accuracy]   (seed 0; about a minute)
"""

from __future__ import annotations

import argparse
import json
import os
import random

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "accuracy")


def norm(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def noise(rng, n, d):
    return rng.standard_normal((n, d)) / np.sqrt(d)


def write(name, corpus, queries, qrels):
    out = os.path.join(OUT, name)
    os.makedirs(out, exist_ok=True)
    cid = [f"d{i}" for i in range(len(corpus))]
    qid = [f"q{i:06d}" for i in range(len(queries))]
    np.save(os.path.join(out, "corpus.npy"), corpus)
    np.save(os.path.join(out, "queries.npy"), queries)
    ids = sorted(qid)
    random.Random(0).shuffle(ids)
    n = len(ids)
    nv, nt = min(int(0.1 * n), 10000), min(int(0.2 * n), 10000)
    splits = {"train": ids[: n - nv - nt], "val": ids[n - nv - nt : n - nt], "test": ids[n - nt :]}
    rel = {qid[j]: {cid[i]: int(g) for i, g in r.items()} for j, r in enumerate(qrels)}
    for fn, obj in [
        ("corpus_ids.json", cid),
        ("query_ids.json", qid),
        ("qrels.json", rel),
        ("splits.json", splits),
        ("embed_meta.json", {"synthetic": name}),
    ]:
        with open(os.path.join(out, fn), "w") as f:
            json.dump(obj, f)
    print(name, corpus.shape, len(queries), {k: len(v) for k, v in splits.items()})


def corpus_of(rng, n, d, n_clusters, spread):
    centres = norm(rng.standard_normal((n_clusters, d)))
    lab = rng.integers(0, n_clusters, n)
    return norm(centres[lab] + spread * noise(rng, n, d)), lab


def single(rng, x, recs, n_q, b, sigma):
    d = x.shape[1]
    m = norm(x[recs] + b * norm(rng.standard_normal((len(recs), d))))
    owner = np.repeat(np.arange(len(recs)), n_q)
    q = norm(m[owner] + sigma * noise(rng, len(owner), d))
    return q, [{int(recs[o]): 1} for o in owner]


def main():
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=OUT)
    OUT = parser.parse_args().out
    rng = np.random.default_rng(0)
    # syn_many
    x, _ = corpus_of(rng, 30000, 128, 600, 0.2)
    recs = rng.choice(30000, 2500, replace=False)
    q, rel = single(rng, x, recs, 1 + rng.poisson(9, len(recs)), b=0.5, sigma=1.5)
    write("syn_many", x, q, rel)
    # syn_wide
    x, _ = corpus_of(rng, 50000, 64, 1000, 0.6)
    recs = rng.choice(50000, 15000, replace=False)
    q, rel = single(rng, x, recs, 1 + (rng.random(len(recs)) < 0.3), b=1.6, sigma=0.5)
    write("syn_wide", x, q, rel)
    # syn_multi: groups of records around a group centre
    d, n = 256, 40000
    x, _ = corpus_of(rng, n, d, 800, 0.35)
    n_groups = 4000
    size = rng.integers(1, 7, n_groups)
    seeds = rng.choice(n, n_groups, replace=False)
    free = np.setdiff1d(np.arange(n), seeds)
    rng.shuffle(free)
    extra = free[: int((size - 1).sum())]
    members = np.split(extra, np.cumsum(size - 1)[:-1])
    # group members are pulled towards their seed record: a tight topical group
    for s, mem in zip(seeds, members, strict=True):
        if len(mem):
            x[mem] = norm(x[s] + 0.3 * noise(rng, len(mem), d))
    groups = [np.r_[s, mem] for s, mem in zip(seeds, members, strict=True)]
    centre = norm(np.stack([x[g].mean(0) for g in groups]))
    m = norm(centre + 0.9 * norm(rng.standard_normal((n_groups, d))))
    nq = 1 + rng.poisson(2, n_groups)
    owner = np.repeat(np.arange(n_groups), nq)
    q = norm(m[owner] + 1.2 * noise(rng, len(owner), d))
    rel = [{int(r): (2 if i == 0 else 1) for i, r in enumerate(groups[o])} for o in owner]
    write("syn_multi", x, q, rel)
    # syn_mixed (own seed, added after the other three): heterogeneous query counts
    rng = np.random.default_rng(1)
    x, _ = corpus_of(rng, 30000, 128, 600, 0.3)
    recs = rng.choice(30000, 4000, replace=False)
    nq = np.minimum(rng.zipf(1.8, len(recs)), 40)
    q, rel = single(rng, x, recs, nq, b=1.2, sigma=1.0)
    write("syn_mixed", x, q, rel)
    # syn_mixhard: syn_mixed with noisier queries (σ = 1.6), same records and counts (seed 1)
    rng = np.random.default_rng(1)
    x, _ = corpus_of(rng, 30000, 128, 600, 0.3)
    recs = rng.choice(30000, 4000, replace=False)
    nq = np.minimum(rng.zipf(1.8, len(recs)), 40)
    q, rel = single(rng, x, recs, nq, b=1.2, sigma=1.6)
    write("syn_mixhard", x, q, rel)


if __name__ == "__main__":
    main()
