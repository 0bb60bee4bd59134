"""The physical floor: one exact FAISS ``IndexFlatIP`` search of the validation queries.

Started by ``run_bench.py`` as its own process. Loads the corpus into memory, adds it to an
``IndexFlatIP`` (timed apart), then times one ``search`` of all validation queries with
k = 1, the least a γ search must do: score every validation query against every record
once. Writes a JSON report.

Usage::

    python bench/_faiss_worker.py DATASET --report REPORT.json [--threads 2] [--k 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np


def run(dataset: Path, threads: int, k: int) -> dict[str, Any]:
    """Load, build the flat index, time the search; return the report."""
    import faiss

    faiss.omp_set_num_threads(threads)
    tick = time.perf_counter()
    query_ids = json.loads((dataset / "query_ids.json").read_text())
    val_ids = json.loads((dataset / "splits.json").read_text())["val"]
    row = {q: i for i, q in enumerate(query_ids)}
    queries = np.load(dataset / "queries.npy")
    val_q = np.ascontiguousarray(queries[[row[q] for q in val_ids]], dtype=np.float32)
    del queries
    corpus = np.load(dataset / "corpus.npy")
    load_s = time.perf_counter() - tick

    tick = time.perf_counter()
    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus)
    add_s = time.perf_counter() - tick
    del corpus

    cpu = resource.getrusage(resource.RUSAGE_SELF)
    tick = time.perf_counter()
    scores, _ = index.search(val_q, k)
    search_s = time.perf_counter() - tick
    after = resource.getrusage(resource.RUSAGE_SELF)
    search_cpu_s = (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)
    return {
        "load_s": load_s,
        "add_s": add_s,
        "search_s": search_s,
        "search_cpu_s": search_cpu_s,
        "k": k,
        "n_queries": len(val_q),
        "n_records": int(index.ntotal),
        "threads": threads,
        "faiss": faiss.__version__,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "checksum": float(scores.sum()),
    }


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, default=1)
    args = parser.parse_args()
    args.report.write_text(json.dumps(run(args.dataset, args.threads, args.k), indent=1))


if __name__ == "__main__":
    main()
