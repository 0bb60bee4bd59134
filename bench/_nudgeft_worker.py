"""Run nudge-ft (the reference NUDGE implementation) on an embedded dataset directory.

Started by ``run_bench.py`` as its own process, so that its peak RSS is its own. Loads the
dataset, builds nudge-ft's train/val sets (``q_embs`` + ``q_ans_indx`` row lists), times only
the ``finetune_embeddings`` call on the CPU, records the γ nudge-ft chose, writes the
fine-tuned N × d embeddings (corpus row order) to ``--out`` and a JSON report to
``--report``.

Variants:

* ``default`` — ``finetune_embeddings(corpus, train_set, val_set)`` as in nudge-ft's README.
* ``nontrain`` — the README's large-dataset optimisation: the records that answer some
  train or val query are passed as ``embeddings`` (rows permuted so they form a prefix,
  labels remapped), all other records as ``nontrain_embeddings``. The output prefix is put
  back in corpus order and the non-answering rows are appended L2-normalised, as nudge-ft
  itself scores them (cosine).

Usage::

    python bench/_nudgeft_worker.py DATASET --method nudge-n --variant default \
        --out EMB.npy --report REPORT.json
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.format import open_memmap


def _rss_mb() -> float:
    """Current resident set size of this process, MB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MB (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    """User + system CPU seconds used by this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_labels(root: Path) -> dict[str, Any]:
    """Query rows and relevant corpus rows (grade > 0) of the train and val splits."""
    corpus_ids = json.loads((root / "corpus_ids.json").read_text())
    query_ids = json.loads((root / "query_ids.json").read_text())
    qrels = json.loads((root / "qrels.json").read_text())
    splits = json.loads((root / "splits.json").read_text())
    doc_row = {d: i for i, d in enumerate(corpus_ids)}
    query_row = {q: i for i, q in enumerate(query_ids)}
    out: dict[str, Any] = {"n_records": len(corpus_ids)}
    for name in ("train", "val"):
        ids = splits[name]
        out[name] = {
            "rows": np.array([query_row[q] for q in ids], dtype=np.int64),
            "answers": [
                [doc_row[d] for d, g in qrels.get(q, {}).items() if float(g) > 0] for q in ids
            ],
        }
    return out


def read_rows_split(path: Path, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a float32 ``.npy`` split in two: ``keep`` rows and the others, in order.

    Reads the file in blocks with plain reads (no memory map), so the process holds only
    the two output arrays and one block.
    """
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if fortran or dtype != np.dtype("<f4") or len(shape) != 2:
            raise ValueError(f"{path}: expected a C-order little-endian float32 matrix")
        n, d = shape
        mask = np.zeros(n, dtype=bool)
        mask[keep] = True
        kept = np.empty((int(mask.sum()), d), dtype=np.float32)
        rest = np.empty((n - len(kept), d), dtype=np.float32)
        step = 65_536
        buf = np.empty((step, d), dtype=np.float32)
        i_kept = i_rest = 0
        for start in range(0, n, step):
            rows = min(step, n - start)
            f.readinto(memoryview(buf[:rows]).cast("B"))
            m = mask[start : start + rows]
            k = int(m.sum())
            kept[i_kept : i_kept + k] = buf[:rows][m]
            rest[i_rest : i_rest + rows - k] = buf[:rows][~m]
            i_kept += k
            i_rest += rows - k
    return kept, rest


def _nudge_set(
    queries: np.ndarray, part: dict[str, Any], remap: dict[int, int] | None
) -> dict[str, Any]:
    """nudge-ft's ``{"q_embs": ..., "q_ans_indx": ...}`` for one split."""
    answers = part["answers"]
    if remap is not None:
        answers = [[remap[i] for i in ans] for ans in answers]
    return {"q_embs": np.ascontiguousarray(queries[part["rows"]]), "q_ans_indx": answers}


def run(dataset: Path, method: str, variant: str, out: Path, val_k: int = 1) -> dict[str, Any]:
    """Load, fit with nudge-ft (timed), write the embeddings; return the report."""
    import torch
    from nudge import NUDGEM, NUDGEN

    tick = time.perf_counter()
    labels = load_labels(dataset)
    n = labels["n_records"]
    queries = np.load(dataset / "queries.npy")
    train, val = labels["train"], labels["val"]
    if variant == "default":
        corpus = np.load(dataset / "corpus.npy")
        prefix = None
        nontrain = None
        remap = None
    elif variant == "nontrain":
        answering = [i for part in (train, val) for ans in part["answers"] for i in ans]
        prefix = np.unique(np.asarray(answering, dtype=np.int64))
        corpus, nontrain = read_rows_split(dataset / "corpus.npy", prefix)
        remap = {int(r): j for j, r in enumerate(prefix)}
    else:
        raise ValueError(f"unknown variant {variant!r}")

    train_set = _nudge_set(queries, train, remap)
    val_set = _nudge_set(queries, val, remap)
    del queries
    load_s = time.perf_counter() - tick

    device = torch.device("cpu")
    chosen: list[float] = []
    if method == "nudge-n":
        model: Any = NUDGEN(device=device)
        original = model._sol_maxm

        def sol_maxm(gamma: float, *args: Any) -> Any:
            chosen.append(float(gamma))
            return original(gamma, *args)

        model._sol_maxm = sol_maxm  # the last γ it is called with is the chosen one
        kwargs: dict[str, Any] = {"val_k": val_k}
    elif method == "nudge-m":
        model = NUDGEM(device=device)
        original = model._get_point_of_most_intersection

        def most_intersection(*args: Any) -> Any:
            gamma = original(*args)
            chosen.append(float(gamma))
            return gamma

        model._get_point_of_most_intersection = most_intersection
        kwargs = {}
    else:
        raise ValueError(f"unknown method {method!r}")

    rss_before = _rss_mb()
    cpu_before = _cpu_s()
    tick = time.perf_counter()
    new = model.finetune_embeddings(
        corpus, train_set, val_set, nontrain_embeddings=nontrain, **kwargs
    )
    fit_s = time.perf_counter() - tick
    fit_cpu_s = _cpu_s() - cpu_before
    peak_fit = _peak_rss_mb()
    del corpus

    tick = time.perf_counter()
    if prefix is None:
        np.save(out, np.ascontiguousarray(new, dtype=np.float32))
    else:
        assert nontrain is not None
        full = open_memmap(out, mode="w+", dtype=np.float32, shape=(n, new.shape[1]))
        full[prefix] = new
        others = np.setdiff1d(np.arange(n), prefix)
        step = 65_536
        for start in range(0, len(others), step):
            block = nontrain[start : start + step]
            full[others[start : start + step]] = block / np.linalg.norm(
                block, axis=1, keepdims=True
            )
        full.flush()
        del full
    write_s = time.perf_counter() - tick

    return {
        "method": method,
        "variant": variant,
        "gamma": chosen[-1] if chosen else None,
        "fit_s": fit_s,
        "fit_cpu_s": fit_cpu_s,
        "load_s": load_s,
        "write_s": write_s,
        "rss_before_fit_mb": rss_before,
        "peak_rss_fit_mb": peak_fit,
        "n_records": n,
        "n_fit_rows": n if prefix is None else len(prefix),
        "n_nontrain_rows": 0 if prefix is None else n - len(prefix),
        "n_train_queries": len(train_set["q_ans_indx"]),
        "n_val_queries": len(val_set["q_ans_indx"]),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--method", choices=["nudge-n", "nudge-m"], required=True)
    parser.add_argument("--variant", choices=["default", "nontrain"], default="default")
    parser.add_argument("--val-k", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="fine-tuned embeddings .npy")
    parser.add_argument("--report", type=Path, required=True, help="JSON report")
    args = parser.parse_args()
    report = run(args.dataset, args.method, args.variant, args.out, args.val_k)
    args.report.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
