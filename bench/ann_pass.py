"""The approximate corpus pass (``fit --pass ann``) against the exact pass, side by side.

For each dataset: the exact fit, the ANN fit that builds its FAISS IVF index (and saves
it), and the ANN fit that finds the index already there; γ, test NDCG@10, the pass's and
the whole fit's seconds, the sampled recall. Writes ``bench/results/ann-pass-<name>.json``.

Usage::

    python bench/ann_pass.py bench/out/synth-1m-topics bench/out/synth-1m \
        ../shared/data/scifact/minilm ../shared/data/manpages --method nudge-n
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from nudgekit.engines import EngineSettings
from nudgekit.workflows.evaluate import evaluate_dataset
from nudgekit.workflows.fit import fit_dataset

RESULTS = Path(__file__).resolve().parent / "results"


def run(dataset: Path, method: str, nprobe: int, work: Path) -> dict[str, object]:
    index = work / "index.faiss"
    runs = {}
    for name, settings in (
        ("exact", EngineSettings()),
        ("ann_build", EngineSettings(corpus_pass="ann", index=str(index), nprobe=nprobe)),
        ("ann_existing", EngineSettings(corpus_pass="ann", index=str(index), nprobe=nprobe)),
    ):
        out = work / name
        record = fit_dataset(dataset, out, method=method, engine=settings)
        written = out / "embeddings.npy"  # a Parquet dataset's fit writes changed.parquet
        written = written if written.exists() else out / "changed.parquet"
        metrics = evaluate_dataset(dataset, embeddings=written, split="test")
        t = record["timings_s"]
        runs[name] = {
            "gamma": record["gamma"],
            "test_ndcg@10": metrics["ndcg@10"],
            "pass_s": t.get("scan_corpus", 0.0),
            "index_s": record["pass"].get("index_s", 0.0),
            "fit_s": t["total"],
            "pass": record["pass"],
        }
        shutil.rmtree(out)
        print(name, json.dumps(runs[name]), flush=True)
    exact = runs["exact"]
    return {
        "dataset": str(dataset),
        "method": method,
        "nprobe": nprobe,
        "runs": runs,
        "pass_speedup_existing_index": exact["pass_s"] / runs["ann_existing"]["pass_s"],
        "fit_ratio_with_build": runs["ann_build"]["fit_s"] / exact["fit_s"],
        "ndcg_delta_existing": runs["ann_existing"]["test_ndcg@10"] - exact["test_ndcg@10"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--method", default="nudge-n")
    parser.add_argument("--nprobe", type=int, default=32)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for dataset in args.datasets:
        with tempfile.TemporaryDirectory(dir=Path(__file__).parent / "out") as tmp:
            result = run(dataset, args.method, args.nprobe, Path(tmp))
        # ../shared nests a dataset's embeddings under the model's folder (scifact/minilm)
        label = dataset.parent.name if dataset.name == "minilm" else dataset.name
        name = f"ann-pass-{label}-{args.method}.json"
        (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
        print(name, json.dumps({k: v for k, v in result.items() if k != "runs"}))


if __name__ == "__main__":
    main()
