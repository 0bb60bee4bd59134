"""``apply --pass ann`` through a LanceDB table's own IVF_PQ index, against the exact apply.

Writes the dataset's corpus into a LanceDB table (``id``, ``vector``), builds an IVF_PQ
index on it (cosine), and runs two dry-run applies side by side — the exact pass and the
pass whose candidates come from the table's search — with NUDGE-N, the dataset as the
labels folder. Records γ, the test NDCG@10 after, the read-and-fit seconds, the seconds
the table's search took, the sampled recall. Writes ``bench/results/ann-store-<name>.json``.

Usage::

    python bench/make_synthetic.py --n 200000 --topics 200 --out bench/out/synth-200k-topics
    python bench/ann_store.py bench/out/synth-200k-topics
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa
from lancedb.index import IvfPq

from nudgekit.workflows.apply import apply_to_store

RESULTS = Path(__file__).resolve().parent / "results"


def build_table(dataset: Path, db: Path, chunk: int = 100_000) -> tuple[float, int]:
    corpus = np.load(dataset / "corpus.npy", mmap_mode="r")
    ids = json.loads((dataset / "corpus_ids.json").read_text())
    n, d = corpus.shape
    tick = time.perf_counter()

    def batches():
        for start in range(0, n, chunk):
            values = np.ascontiguousarray(corpus[start : start + chunk], dtype=np.float32)
            yield pa.record_batch(
                {
                    "id": pa.array(ids[start : start + chunk]),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), d),
                }
            )

    schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32(), d))])
    table = lancedb.connect(db).create_table("docs", batches(), schema=schema)
    partitions = max(1, round(math.sqrt(n)))
    table.create_index(
        "vector",
        config=IvfPq(distance_type="cosine", num_partitions=partitions, num_sub_vectors=d // 8),
    )
    return time.perf_counter() - tick, partitions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    out = Path(__file__).parent / "out"
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        db = Path(tmp) / "store.lancedb"
        build_s, partitions = build_table(args.dataset, db)
        print("table and IVF_PQ index", round(build_s, 1), "s", flush=True)
        runs = {}
        for name in ("exact", "ann"):
            record = apply_to_store(
                f"lancedb:{db}", args.dataset, table="docs", method="nudge-n",
                dry_run=True, corpus_pass=name,
            )  # fmt: skip
            runs[name] = {
                "gamma": record["gamma"],
                "test_ndcg@10_after": record["test_after"]["ndcg@10"],
                "test_ndcg@10_before": record["test_before"]["ndcg@10"],
                "read_and_fit_s": record["timings_s"]["read_and_fit"],
                "total_s": record["timings_s"]["total"],
                "pass": record["pass"],
            }
            print(name, json.dumps(runs[name]), flush=True)
    result = {
        "dataset": str(args.dataset),
        "store": "lancedb",
        "index": {
            "type": "IVF_PQ",
            "metric": "cosine",
            "num_partitions": partitions,
            "num_sub_vectors": "d/8",
            "build_s": build_s,
        },
        "runs": runs,
        "read_and_fit_ratio": runs["ann"]["read_and_fit_s"] / runs["exact"]["read_and_fit_s"],
    }
    name = f"ann-store-{args.dataset.name}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    print(name, json.dumps({k: v for k, v in result.items() if k != "runs"}))


if __name__ == "__main__":
    main()
