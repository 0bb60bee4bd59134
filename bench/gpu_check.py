"""The GPU path, checked in one short run on a machine with CUDA (issue 15).

    python bench/gpu_check.py --out OUT [--scifact DIR] [--synthetic DIR ...] [--nq]

For each dataset and method (nudge-n, nudge-m, nudge-cv): ``fit_dataset`` with
``device="cpu"`` (numpy) and ``device="cuda"`` (the torch backend), in this process, and
checks the CUDA fit against the numpy one — the same γ (to 1e-6 relative) and embeddings
to 1e-5 — with each fit's phase timings. ``--nq`` also generates a synthetic corpus at
Natural Questions scale (7.6M × 384, 8,000 validation queries; about 12 GB on disk) and
fits it end to end on CUDA only, NUDGE-N. Writes ``OUT/gpu-check.json`` after every
fit, so a run cut short keeps what it measured; exits 1 if any check fails.

Not run here: no GPU has been lent to this project yet. Prepared so that the first
session that gets one runs it as it is, e.g.
``python bench/gpu_check.py --out $OUT --scifact ../shared/data/scifact/minilm --synthetic
bench/out/synth-1m`` (generate synth-1m first with ``bench/make_synthetic.py --n 1000000``).
``--device torch`` dry-runs the script on CPU (done here on SciFact: every check passes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from nudgekit.workflows.fit import fit_dataset

BENCH = Path(__file__).resolve().parent
METHODS = ("nudge-n", "nudge-m", "nudge-cv")


def fit(dataset: Path, out: Path, method: str, device: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    tick = time.perf_counter()
    record = fit_dataset(dataset, out, method=method, device=device)
    return {"wall_s": time.perf_counter() - tick, "gamma": record["gamma"],
            "timings_s": record["timings_s"], "n_changed": record["n_changed"]}  # fmt: skip


def compare(dataset: Path, work: Path, method: str, device: str) -> dict:
    cpu = fit(dataset, work / "cpu", method, "cpu")
    cuda = fit(dataset, work / "cuda", method, device)
    a = np.load(work / "cpu" / "embeddings.npy", mmap_mode="r")
    b = np.load(work / "cuda" / "embeddings.npy", mmap_mode="r")
    diff = max(
        float(np.abs(a[i : i + 65536] - b[i : i + 65536]).max()) for i in range(0, len(a), 65536)
    )
    same_gamma = abs(cpu["gamma"] - cuda["gamma"]) <= 1e-6 * max(abs(cpu["gamma"]), 1e-12)
    return {"cpu": cpu, "cuda": cuda, "max_abs_difference": diff,
            "ok": bool(same_gamma and diff <= 1e-5)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scifact", type=Path)
    parser.add_argument("--synthetic", type=Path, nargs="*", default=[])
    parser.add_argument("--nq", action="store_true")
    parser.add_argument("--device", default="cuda", help="torch: a dry run of this script on CPU")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script checks the GPU path")
    args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device
    record: dict = {"device": name, "torch": torch.__version__, "runs": {}}
    target = args.out / "gpu-check.json"
    datasets = ([args.scifact] if args.scifact else []) + list(args.synthetic)
    work = args.out / "work"
    for dataset in datasets:
        for method in METHODS:
            key = f"{dataset.name}/{method}"
            record["runs"][key] = compare(dataset, work, method, args.device)
            target.write_text(json.dumps(record, indent=2) + "\n")
            print(key, json.dumps(record["runs"][key]), flush=True)
    if args.nq:
        nq = args.out / "synth-nq"
        subprocess.run([sys.executable, str(BENCH / "make_synthetic.py"), "--n", "7600000",
                        "--max-val", "8000", "--out", str(nq)], check=True)  # fmt: skip
        record["runs"]["synth-nq/nudge-n"] = {"cuda": fit(nq, work / "nq", "nudge-n", args.device)}
        target.write_text(json.dumps(record, indent=2) + "\n")
        print("synth-nq", json.dumps(record["runs"]["synth-nq/nudge-n"]), flush=True)
    failed = [k for k, v in record["runs"].items() if v.get("ok") is False]
    if failed:
        raise SystemExit(f"CUDA differs from numpy: {', '.join(failed)}")


if __name__ == "__main__":
    main()
