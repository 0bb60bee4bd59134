"""The corpus pass on Ray against the single-process path, on a synthetic ≥ 2M × 384 corpus.

One invocation:

1. checks free disk (``df``) for the two copies of the corpus (``.npy`` and Parquet);
2. generates the embedded dataset with ``bench/make_synthetic.py`` (streamed block by
   block into ``corpus.npy``), then streams it into Parquet shards with
   ``nudgekit.parquet.convert_to_parquet`` (one row group at a time);
3. fits NUDGE-N (γ searched on the validation split) four ways, each in a fresh Python
   process, one after the other:

   * ``single`` — ``NudgeN.fit`` on the memory-mapped ``corpus.npy`` (the existing path);
   * ``local`` — the local engine on the Parquet shards;
   * ``ray-1`` / ``ray-2`` — the Ray engine on a local Ray instance with 1 / 2 CPUs and
     as many scan workers (Ray start-up and the distributed id check included in wall);

4. records wall time, the phases, the driver's own peak RSS (``ru_maxrss``), every Ray
   worker's peak RSS (reported by the worker itself), the peak RSS of every process of the
   run (sampled with psutil every 0.2 s), and checks that every run gives the γ, changed
   rows and embeddings (max |Δ|) of ``single``;
5. with ``--repeat R``, runs the four R times, interleaved, and reports each one's fastest
   pass (all runs are in the JSON: on a shared machine other jobs slow some runs down);
6. writes ``bench/results/ray-<n>.json`` and prints a markdown table; deletes the datasets
   unless ``--keep``.

Usage::

    python bench/ray_bench.py --n 2000000 --repeat 2  # ~3 GB per copy, ~20 min on 2 cores
    python bench/ray_bench.py --n 200000 --keep       # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
MB = 2**20
RUNS = ("single", "local", "ray-1", "ray-2")


# -- one fit, in its own process --------------------------------------------------------------
def run_one(kind: str, npy: Path, pq: Path, out: Path, val_queries: int) -> None:
    """Fit NUDGE-N one way; write ``out``.json (timings, memory) and ``out``.npz (result)."""
    from nudgekit import NudgeN
    from nudgekit.engines import EngineSettings, fit
    from nudgekit.io.dataset import load_dataset
    from nudgekit.io.parquet import load_parquet_dataset

    started = time.perf_counter()
    facts: dict[str, Any] = {"kind": kind}
    if kind == "single":
        data = load_dataset(npy)
        train, val = data.split("train"), data.split("val")
        model = NudgeN().fit(
            data.corpus, train.queries, train.relevance, val.queries, val.relevance
        )
        rows = model.changed_rows_
    else:
        data = load_parquet_dataset(pq)
        if kind == "local":
            fitted = fit(NudgeN(), data)
        else:
            import ray

            workers = int(kind.split("-")[1])
            tick = time.perf_counter()
            ray.init(
                num_cpus=workers,
                include_dashboard=False,
                object_store_memory=1 << 30,
                log_to_driver=False,
            )
            facts["ray_init_s"] = time.perf_counter() - tick
            fitted = fit(NudgeN(), data, EngineSettings("ray", workers=workers, quiet=True))
        model, rows = fitted, fitted.changed_rows_
        facts["engine_stats"] = fitted.pass_stats_
    facts.update(
        {
            "wall_s": time.perf_counter() - started,
            "timings_s": model.timings_,
            "gamma": model.gamma_,
            "n_changed": model.n_changed_,
            "validation_accuracy": getattr(model, "validation_accuracy_", None),
            "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )
    np.savez(out.with_suffix(".npz"), rows=rows, embeddings=model.changed_embeddings_)
    out.with_suffix(".json").write_text(json.dumps(facts, indent=1))
    if kind.startswith("ray"):
        import ray

        ray.shutdown()


# -- the parent: data, runs, comparison -------------------------------------------------------
def measured(kind: str, npy: Path, pq: Path, work: Path, val_queries: int) -> dict[str, Any]:
    """Run one fit in a child process; sample every process of its tree with psutil."""
    import psutil

    out = work / kind
    cmd = [sys.executable, __file__, "--worker", kind, "--npy", str(npy), "--pq", str(pq)]
    cmd += ["--out", str(out), "--val-queries", str(val_queries)]
    stall_before = cpu_stall_us()
    tick = time.perf_counter()
    log = open(out.with_suffix(".log"), "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    peaks: dict[int, tuple[str, float]] = {}
    total_peak = 0.0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        total = 0.0
        for p in tree:  # processes of one run: a handful
            try:
                rss = p.memory_info().rss / MB
                name = " ".join(p.cmdline()[:2])[-60:] or p.name()
            except psutil.Error:
                continue
            total += rss
            if rss > peaks.get(p.pid, ("", 0.0))[1]:
                peaks[p.pid] = (name, rss)
        total_peak = max(total_peak, total)
        time.sleep(0.2)
    wall = time.perf_counter() - tick
    log.close()
    if proc.wait() != 0:
        raise RuntimeError(f"{kind} failed; see {out.with_suffix('.log')}")
    facts = json.loads(out.with_suffix(".json").read_text())
    facts["process_wall_s"] = wall
    stall_after = cpu_stall_us()
    if stall_before is not None and stall_after is not None:
        # share of the run in which some runnable task waited for a CPU (other jobs on a
        # shared machine included): high values mean the timings are inflated
        facts["cpu_pressure_pct"] = round(100 * (stall_after - stall_before) / 1e6 / wall, 1)
    facts["sampled_peak_rss_mb"] = sorted(
        ({"process": n, "peak_rss_mb": round(r, 1)} for n, r in peaks.values()),
        key=lambda x: -x["peak_rss_mb"],
    )
    facts["sampled_total_peak_rss_mb"] = round(total_peak, 1)
    return facts


def cpu_stall_us() -> int | None:
    """Linux PSI: cumulative µs in which some runnable task waited for a CPU."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(dict(f.split("=") for f in first.split()[1:])["total"])


def compare(work: Path, kind: str) -> dict[str, Any]:
    ref, got = np.load(work / "single.npz"), np.load(work / f"{kind}.npz")
    same_rows = bool(np.array_equal(ref["rows"], got["rows"]))
    diff = float(np.abs(ref["embeddings"] - got["embeddings"]).max()) if same_rows else None
    return {"same_changed_rows": same_rows, "max_abs_embedding_diff": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--val-queries", type=int, default=2000, help="cap on val/test sizes")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--keep", action="store_true", help="keep the generated datasets")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each kind (best pass)")
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--npy", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pq", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_one(args.worker, args.npy, args.pq, args.out, args.val_queries)
        return

    from make_synthetic import make_dataset

    from nudgekit.io.parquet import convert_to_parquet

    root = BENCH_DIR / "out" / f"ray-{args.n}"
    npy, pq, work = root / "npy", root / "pq", root / "work"
    need = 2 * args.n * 384 * 4 * 1.1
    free = shutil.disk_usage(BENCH_DIR).free
    print(f"df: {free / 1e9:.1f} GB free, need ~{need / 1e9:.1f} GB", flush=True)
    if free < need + 5e9:
        sys.exit("not enough free disk for two copies of the corpus (+5 GB headroom)")
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "n_records": args.n,
        "dim": 384,
        "shards": args.shards,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        if not (npy / "corpus.npy").exists():
            tick = time.perf_counter()
            result["generate"] = make_dataset(npy, args.n, max_val=args.val_queries)
            result["generate_s"] = time.perf_counter() - tick
            print(f"generated in {result['generate_s']:.0f} s", flush=True)
        if not (pq / "corpus").exists():
            result["convert"] = convert_to_parquet(npy, pq, shards=args.shards)
            print(f"converted in {result['convert']['seconds']:.0f} s", flush=True)
        meta = json.loads((npy / "embed_meta.json").read_text())
        result["splits"] = meta["splits"]
        runs: dict[str, Any] = {}
        every: dict[str, list[dict[str, Any]]] = {}
        for attempt in range(args.repeat):  # interleaved: a burst of load hits all runs
            for kind in args.runs.split(","):
                print(f"run {kind} ({attempt + 1}/{args.repeat}) ...", flush=True)
                run = measured(kind, npy, pq, work, args.val_queries)
                if kind != "single" and (work / "single.npz").exists():
                    run.update(compare(work, kind))
                every.setdefault(kind, []).append(run)
                brief = {k: v for k, v in run.items() if "rss_mb" not in k}
                print(json.dumps(brief), flush=True)
        # the fastest pass of each run is reported (the least disturbed by other jobs)
        runs = {k: min(v, key=lambda r: r["timings_s"]["scan_corpus"]) for k, v in every.items()}
        result["runs"] = runs
        result["all_runs"] = every
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    import pyarrow
    import ray

    import nudgekit

    result["versions"] = {
        "nudgekit": nudgekit.__version__,
        "numpy": np.__version__,
        "pyarrow": pyarrow.__version__,
        "ray": ray.__version__,
        "python": platform.python_version(),
    }
    target = BENCH_DIR / "results" / f"ray-{args.n // 1_000_000}m.json"
    if args.n % 1_000_000:
        target = BENCH_DIR / "results" / f"ray-{args.n}.json"
    target.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"-> {target}")


def table(result: dict[str, Any]) -> str:
    """The markdown table of docs/scale.md.

    Cores: the single process and the local engine use every core through BLAS threads;
    a Ray scan worker uses one.
    """
    n, cpus = result["n_records"], result["machine"]["cpus"]
    lines = [
        "| run | cores | wall s | Ray start s | id check s | corpus pass s | pass records/s "
        "| per core | driver peak RSS MB | worker peak RSS MB | γ | changed | same result "
        "| CPU pressure |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, r in result["runs"].items():
        t = r["timings_s"]
        cores = int(kind.split("-")[1]) if kind.startswith("ray") else cpus
        stats = r.get("engine_stats", {})
        worker_rss = stats.get("worker_peak_rss_bytes")
        same = (
            "reference"
            if kind == "single"
            else f"{'yes' if r.get('same_changed_rows') else 'NO'}, "
            f"max Δ {r.get('max_abs_embedding_diff', float('nan')):.1e}"
        )
        rate = n / t["scan_corpus"]
        lines.append(
            f"| {kind} | {cores} | {r['process_wall_s']:.1f} | {r.get('ray_init_s', 0):.1f} "
            f"| {t.get('check_ids', 0):.1f} | {t['scan_corpus']:.1f} | {rate:,.0f} "
            f"| {rate / cores:,.0f} | {r['driver_peak_rss_mb']:,.0f} "
            f"| {', '.join(f'{b / MB:,.0f}' for b in worker_rss) if worker_rss else '–'} "
            f"| {r['gamma']:.4g} | {r['n_changed']:,} | {same} "
            f"| {r.get('cpu_pressure_pct', float('nan')):.0f} % |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
