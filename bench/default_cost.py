"""What the default costs: ``nudgekit fit`` with the default (nudge-cv) and its cheaper mode
against the reference-faithful ``--method nudge-n``, side by side in one run.

    python bench/default_cost.py DATASET_DIR [--repeat 2] [--name NAME]

Each configuration is the whole ``nudgekit fit DATASET --out TMP --quiet`` process
(start-up, loading, the corpus pass, the γ search, writing the embeddings), run in turn —
nudge-n, default, cheaper, nudge-n, default, ... — so that a noisy machine slows all of them
alike. Wall time and peak RSS (``os.wait4``) per run; per-phase seconds and the choice from
fit.json; test NDCG@10 of each output with ``nudgekit eval``. Ratios are best/best against
nudge-n. Writes ``bench/results/default-cost-<name>.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
NUDGEKIT = [str(Path(sys.executable).parent / "nudgekit")]  # the venv's command
CONFIGS = {
    "nudge-n (reference)": ["--method", "nudge-n"],
    "default (nudge-cv)": [],
    "cheaper mode (--param cv=val)": ["--param", "cv=val"],
}


def run_fit(dataset: Path, args: list[str], out: Path, env: dict[str, str]) -> dict:
    """One whole ``nudgekit fit`` process: wall seconds, peak RSS (MiB), its fit.json."""
    shutil.rmtree(out, ignore_errors=True)
    tick = time.perf_counter()
    proc = subprocess.Popen(
        [*NUDGEKIT, "fit", str(dataset), "--out", str(out), "--quiet", *args], env=env
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - tick
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"nudgekit fit {' '.join(args)} failed")
    record = json.loads((out / "fit.json").read_text())
    return {"wall_s": seconds, "peak_rss_mib": usage.ru_maxrss / 1024, "fit": record}


def test_ndcg(dataset: Path, embeddings: Path, env: dict[str, str]) -> float:
    result = subprocess.run(
        [*NUDGEKIT, "eval", str(dataset), "--embeddings", str(embeddings), "--json", "--quiet"],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return float(json.loads(result.stdout)["ndcg@10"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--name", default=None)
    parser.add_argument("--threads", type=int, default=2, help="BLAS threads")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args()
    name = args.name or args.dataset.name
    env = dict(
        os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads)
    )
    runs: dict[str, list[dict]] = {label: [] for label in CONFIGS}
    ndcg: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=BENCH_DIR / "out") as work:
        for r in range(args.repeat):
            for i, (label, options) in enumerate(CONFIGS.items()):
                out = Path(work) / str(i)
                run = run_fit(args.dataset, options, out, env)
                print(f"{label}: {run['wall_s']:.1f} s", file=sys.stderr, flush=True)
                if r == 0:
                    ndcg[label] = test_ndcg(args.dataset, out / "embeddings.npy", env)
                runs[label].append(run)
    reference = min(run["wall_s"] for run in runs["nudge-n (reference)"])
    rows = {}
    for label, done in runs.items():
        best = min(done, key=lambda run: run["wall_s"])
        fit = best["fit"]
        rows[label] = {
            "wall_s": [round(run["wall_s"], 2) for run in done],
            "best_s": round(best["wall_s"], 2),
            "ratio_to_nudge_n": round(best["wall_s"] / reference, 3),
            "peak_rss_mib": round(max(run["peak_rss_mib"] for run in done)),
            "timings_s": {k: round(v, 2) for k, v in fit["timings_s"].items()},
            "chosen": f"{fit.get('family', 'nudge-n')} {fit['gamma']:.4g}",
            "n_scored": fit.get("selection", {}).get("n_scored"),
            "n_labelled": fit.get("selection", {}).get("n_labelled"),
            "test_ndcg@10": round(ndcg[label], 4),
        }
    result = {
        "dataset": str(args.dataset.resolve()),
        "repeat": args.repeat,
        "threads": args.threads,
        "nproc": os.cpu_count(),
        "configs": {
            label: ["nudgekit", "fit", "DATASET", *options] for label, options in CONFIGS.items()
        },
        "rows": rows,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"default-cost-{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print("| fit | best s | × nudge-n | pass s | γ search s | peak MiB | chosen | test NDCG@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for label, row in rows.items():
        t = row["timings_s"]
        print(
            f"| {label} | {row['best_s']:.1f} | {row['ratio_to_nudge_n']:.2f} | "
            f"{t['scan_corpus']:.1f} | {t['search_gamma']:.1f} | "
            f"{row['peak_rss_mib']:,} | {row['chosen']} | {row['test_ndcg@10']:.4f} |"
        )


if __name__ == "__main__":
    main()
