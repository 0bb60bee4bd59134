"""Two source trees of nudgekit side by side: same γ, same embeddings, wall time (ratio).

    python bench/compare_trees.py OLD_SRC NEW_SRC DATASET --method nudge-n --repeat 5

Runs ``nudgekit fit DATASET --method M --out TMP --quiet`` from each tree in turn
(alternating, so machine noise hits both alike), keeps the best wall time of each, and
checks that fit.json's γ and n_changed and the embeddings are identical bit for bit.
Writes a JSON summary with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RUN = "from nudgekit.cli import main; main()"


def fit(src: str, dataset: str, method: str, out: Path, threads: int) -> float:
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))  # fmt: skip
    cmd = [sys.executable, "-c", RUN, "fit", dataset, "--method", method, "--out", str(out)]
    tick = time.perf_counter()
    subprocess.run([*cmd, "--quiet"], env=env, check=True)
    return time.perf_counter() - tick


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("dataset")
    parser.add_argument("--method", default="nudge-n")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"old": [], "new": []}
    scratch = "bench/out" if Path("bench/out").is_dir() else None
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        outs = {k: Path(tmp) / k for k in times}
        for _ in range(args.repeat):
            for key, src in (("old", args.old), ("new", args.new)):
                times[key].append(fit(src, args.dataset, args.method, outs[key], args.threads))
        fits = {k: json.loads((outs[k] / "fit.json").read_text()) for k in times}
        same_bits = bool(
            np.array_equal(
                np.load(outs["old"] / "embeddings.npy").view(np.uint32),
                np.load(outs["new"] / "embeddings.npy").view(np.uint32),
            )
        )
    result = {
        "dataset": args.dataset,
        "method": args.method,
        "gamma": {k: fits[k]["gamma"] for k in fits},
        "n_changed": {k: fits[k]["n_changed"] for k in fits},
        "validation_accuracy": {k: fits[k]["validation_accuracy"] for k in fits},
        "embeddings_identical": same_bits,
        "wall_s": times,
        "best_s": {k: min(v) for k, v in times.items()},
        "ratio_new_to_old": min(times["new"]) / min(times["old"]),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
