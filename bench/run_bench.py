"""Side-by-side benchmark: ``nudgekit fit`` vs nudge-ft (and an exact FAISS search).

For one embedded dataset directory and one method, in one invocation:

1. **nudgekit** — the whole ``nudgekit fit DATASET --method M --out TMP --quiet`` process
   (interpreter start-up, imports, loading, fitting, writing embeddings.npy + fit.json):
   wall time, and peak RSS from ``os.wait4`` (the child's own ``ru_maxrss``). γ, changed
   rows and per-phase timings come from fit.json. Repeated ``--repeat`` times; the median
   wall time is reported.
2. **nudge-ft** — ``bench/_nudgeft_worker.py`` in its own process, timing only its
   ``finetune_embeddings`` call on the CPU; variants ``default`` and ``nontrain`` (see the
   worker). A variant whose estimated memory does not fit in the available RAM is skipped
   and recorded as ``skipped: would need X GB``.
3. **FAISS floor** (``--faiss``, default on for ≥ 500k records) — ``bench/_faiss_worker.py``:
   one exact ``IndexFlatIP`` search of the validation queries with k = 1, 2 threads;
   interleaved with the nudgekit repeats.
4. Test NDCG@10 / recall@10 of every output (and of the raw corpus) with
   ``nudgekit eval DATASET [--embeddings F] --json``.

Writes ``bench/results/<name>-<method>.json`` and prints a markdown table.

Usage::

    python bench/run_bench.py /work/shared/data/scifact/minilm --name scifact --method nudge-n
    python bench/run_bench.py bench/out/synth-100k --method nudge-m
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
GB = 1e9
MB = 2**20


# -- processes -------------------------------------------------------------------------------
def cpu_stall_us() -> int | None:
    """Cumulative time some runnable task waited for a CPU (Linux PSI ``some total``), µs."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return int(dict(f.split("=") for f in first.split()[1:])["total"])


def cpu_pressure_avg10() -> float | None:
    """PSI ``some avg10`` for the CPU: % of the last 10 s in which some task waited for one."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return float(dict(f.split("=") for f in first.split()[1:])["avg10"])


def wait_for_quiet(max_wait: float, threshold: float = 10.0) -> float:
    """Wait (up to ``max_wait`` s) until other processes leave the CPUs mostly idle.

    Returns the seconds waited. Other jobs on a shared machine make single runs of
    multi-threaded code many times slower (a thread that loses its core stalls every
    parallel region), so each measured run starts when CPU pressure is below ``threshold``
    %, when possible.
    """
    tick = time.perf_counter()
    while time.perf_counter() - tick < max_wait:
        pressure = cpu_pressure_avg10()
        if pressure is None or pressure < threshold:
            break
        time.sleep(2.0)
    return time.perf_counter() - tick


def child_env(threads: int) -> dict[str, str]:
    """This environment with the thread count pinned for OpenMP, OpenBLAS, MKL and torch."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return env


TIME = "/usr/bin/time"
QUIET_WAIT_S = 60.0  # set by --quiet-wait
MAX_RSS_BYTES = float("inf")  # set by --max-rss-gb: a child above it is killed


class RunFailed(RuntimeError):
    """A measured command exited non-zero or was stopped by the RSS guard."""


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and its descendants (0 once it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _guard(pid: int, done: threading.Event, tripped: list[int]) -> None:
    """Kill the process group of ``pid`` if its RSS goes over ``MAX_RSS_BYTES``.

    Keeps a run that outgrows the machine from waking the kernel's OOM killer, which
    might pick someone else's process.
    """
    while not done.wait(0.5):
        rss = _tree_rss(pid)
        if rss > MAX_RSS_BYTES:
            tripped.append(rss)
            os.killpg(pid, signal.SIGKILL)
            return


def run_measured(
    cmd: list[str], log: Path, threads: int, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``cmd`` to completion; its wall time and its own peak RSS.

    The peak RSS comes from GNU ``/usr/bin/time`` wrapped around the command. Linux carries
    the forking process's high-water RSS over into the child's ``ru_maxrss`` across
    fork + exec, so ``os.wait4`` on a child of this (larger) Python process would report
    at least this process's RSS; ``time`` is a few MB, so its child's figure is the
    command's own. Without ``/usr/bin/time`` it falls back to ``os.wait4``.
    """
    use_time = os.access(TIME, os.X_OK)
    measure = log.with_suffix(".time")
    waited = wait_for_quiet(QUIET_WAIT_S)
    full = [TIME, "-f", "%M %U %S %R", "-o", str(measure), *cmd] if use_time else cmd
    stall_before = cpu_stall_us()
    with open(log, "w") as out:
        tick = time.perf_counter()
        proc = subprocess.Popen(
            full,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**child_env(threads), **(extra_env or {})},
            start_new_session=True,  # its own process group, for the RSS guard
        )
        done, tripped = threading.Event(), []
        guard = threading.Thread(target=_guard, args=(proc.pid, done, tripped), daemon=True)
        guard.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - tick
        done.set()
        guard.join()
    stall_after = cpu_stall_us()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if tripped:
        raise RunFailed(
            f"stopped by the RSS guard after {wall:.0f} s: "
            f"{tripped[0] / GB:.1f} GB > --max-rss-gb {MAX_RSS_BYTES / GB:.1f}"
        )
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise RunFailed(f"exited with {proc.returncode} after {wall:.0f} s: {tail}")
    if use_time:
        max_kib, user, system, faults = measure.read_text().split()[-4:]
        peak_kib, user_s, sys_s = float(max_kib), float(user), float(system)
        minor_faults = int(faults)
    else:
        peak_kib, user_s, sys_s = usage.ru_maxrss, usage.ru_utime, usage.ru_stime
        minor_faults = usage.ru_minflt
    stall = None
    if stall_before is not None and stall_after is not None:
        stall = (stall_after - stall_before) / 1e6 / wall
    return {
        "wall_s": wall,
        "peak_rss_mb": peak_kib / 1024,
        "rss_source": "/usr/bin/time %M" if use_time else "os.wait4 ru_maxrss",
        "cpu_s": user_s + sys_s,
        "sys_s": sys_s,
        "minor_faults": minor_faults,
        # share of the run during which some task waited for a CPU: > ~0.1 means other
        # processes competed for the cores and the time is inflated
        "cpu_stall_frac": stall,
        "waited_for_quiet_s": waited,
    }


def nudgekit_command() -> str:
    """The ``nudgekit`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("nudgekit")
    if script.exists():
        return str(script)
    found = shutil.which("nudgekit")
    if found is None:
        raise FileNotFoundError("the nudgekit command is not installed")
    return found


def evaluate(dataset: Path, embeddings: Path | None = None) -> dict[str, float]:
    """Test-split NDCG@10 and recall@10 with ``nudgekit eval --json``."""
    cmd = [nudgekit_command(), "eval", str(dataset), "--json", "--quiet"]
    if embeddings is not None:
        cmd[3:3] = ["--embeddings", str(embeddings)]
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return {"ndcg@10": result["ndcg@10"], "recall@10": result["recall@10"]}


# -- dataset facts ---------------------------------------------------------------------------
def dataset_info(dataset: Path) -> dict[str, Any]:
    """Shape, split sizes, label counts and on-disk size of a dataset directory."""
    corpus = np.load(dataset / "corpus.npy", mmap_mode="r")
    n, d = corpus.shape
    del corpus
    splits = json.loads((dataset / "splits.json").read_text())
    qrels = json.loads((dataset / "qrels.json").read_text())
    answering: set[str] = set()
    per_val: list[int] = []
    for name in ("train", "val"):
        for q in splits[name]:
            rel = [doc for doc, g in qrels.get(q, {}).items() if float(g) > 0]
            answering.update(rel)
            if name == "val":
                per_val.append(len(rel))
    files = [p for p in dataset.iterdir() if p.is_file()]
    return {
        "path": str(dataset.resolve()),
        "n_records": int(n),
        "dim": int(d),
        "splits": {k: len(v) for k, v in splits.items()},
        "n_train_val_answering_records": len(answering),
        "mean_val_relevant": float(np.mean(per_val)) if per_val else 0.0,
        "input_bytes": sum(p.stat().st_size for p in files),
        "corpus_bytes": (dataset / "corpus.npy").stat().st_size,
    }


def warm_page_cache(dataset: Path) -> float:
    """Read the dataset's files once so every contender starts from a warm page cache."""
    tick = time.perf_counter()
    for path in sorted(dataset.iterdir()):
        if path.is_file():
            with open(path, "rb") as f:
                while f.read(1 << 24):
                    pass
    return time.perf_counter() - tick


def machine_info() -> dict[str, Any]:
    """Cores, CPU, RAM and library versions (read without importing torch or faiss)."""
    from importlib.metadata import version

    import psutil

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(psutil.virtual_memory().total / GB, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": version("torch"),
        "faiss": version("faiss-cpu"),
        "nudge_ft": version("nudge-ft"),
        "nudgekit": version("nudgekit"),
        "platform": platform.platform(),
        "nudgekit_commit": _git("rev-parse", "--short", "HEAD"),
        "nudgekit_src_dirty": bool(_git("status", "--porcelain", "--", "src")),
    }


def _git(*args: str) -> str | None:
    """Output of a read-only git command in this repository (None if git fails)."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=BENCH_DIR, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip()


# -- nudge-ft memory estimate ----------------------------------------------------------------
def estimate_nudgeft_bytes(method: str, variant: str, info: dict[str, Any]) -> float:
    """Rough peak memory of one nudge-ft ``finetune_embeddings`` call (from its code).

    ``rows`` = records passed as ``embeddings`` (all, or the answering prefix). NUDGE-N
    keeps a dense val × rows label matrix and builds a val × rows score matrix twice (the
    per-block list and its concatenation) for every γ; both variants also hold about ten
    rows × d float32 matrices (normalised copy, per-row G list and its concatenation, the
    temporaries of ``_sol_maxm``). NUDGE-M works per 256 validation queries on about a
    dozen (256 · answers-per-query) × rows matrices. The input corpus itself is added.
    """
    n, d = info["n_records"], info["dim"]
    n_val = info["splits"]["val"]
    rows = n if variant == "default" else info["n_train_val_answering_records"]
    matrix = rows * d * 4
    total = 0.5 * GB + n * d * 4  # interpreter + torch, and the corpus held in memory
    if method == "nudge-n":
        total += 10 * matrix + 3 * n_val * rows * 4
    else:
        per_batch = min(256, n_val) * max(info["mean_val_relevant"], 1.0)
        total += 7 * matrix + 12 * per_batch * rows * 4
    return float(total)


# -- the benchmark ---------------------------------------------------------------------------
def run_nudgekit(dataset: Path, method: str, work: Path, tag: str, threads: int) -> dict[str, Any]:
    """One whole ``nudgekit fit`` process: wall, peak RSS and its fit.json."""
    out = work / "nudgekit"
    cmd = [nudgekit_command(), "fit", str(dataset), "--method", method]
    cmd += ["--out", str(out), "--quiet"]
    measured = run_measured(cmd, work / f"nudgekit-{tag}.log", threads)
    fit = json.loads((out / "fit.json").read_text())
    return {
        **measured,
        "gamma": fit["gamma"],
        "n_changed": fit["n_changed"],
        "validation_accuracy": fit["validation_accuracy"],
        "timings_s": fit["timings_s"],
    }


def run_faiss(dataset: Path, work: Path, tag: str, threads: int) -> dict[str, Any]:
    """One FAISS worker process: its search time and its peak RSS."""
    report = work / f"faiss-{tag}.json"
    cmd = [sys.executable, str(BENCH_DIR / "_faiss_worker.py"), str(dataset)]
    cmd += ["--report", str(report), "--threads", str(threads), "--k", "1"]
    measured = run_measured(cmd, work / f"faiss-{tag}.log", threads)
    return {
        **json.loads(report.read_text()),
        "process_wall_s": measured["wall_s"],
        "cpu_stall_frac": measured["cpu_stall_frac"],
        "waited_for_quiet_s": measured["waited_for_quiet_s"],
    }


def run_nudgeft(
    dataset: Path,
    method: str,
    variant: str,
    work: Path,
    info: dict[str, Any],
    *,
    threads: int,
    repeat: int,
    keep: bool,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """nudge-ft worker runs (or a skip record), with test metrics of the last output.

    ``fit_s`` is the best (least) of the runs' ``finetune_embeddings`` times.
    """
    import psutil

    need = estimate_nudgeft_bytes(method, variant, info)
    available = psutil.virtual_memory().available
    cmd = [sys.executable, str(BENCH_DIR / "_nudgeft_worker.py"), str(dataset)]
    emb = work / f"nudgeft-{variant}.npy"
    report = work / f"nudgeft-{variant}.json"
    cmd += ["--method", method, "--variant", variant, "--out", str(emb)]
    cmd += ["--report", str(report)]
    entry: dict[str, Any] = {
        "command": " ".join(cmd),
        "estimated_gb": round(need / GB, 2),
        "available_gb": round(available / GB, 2),
        "extra_env": extra_env or {},
    }
    if need > 0.85 * available:
        entry["skipped"] = (
            f"skipped: would need ~{need / GB:.0f} GB (estimate), {available / GB:.0f} GB available"
        )
        return entry
    runs: list[dict[str, Any]] = []
    for i in range(repeat):
        try:
            measured = run_measured(cmd, work / f"nudgeft-{variant}-{i}.log", threads, extra_env)
        except RunFailed as error:
            entry["failed"] = f"failed: {error}"
            emb.unlink(missing_ok=True)
            return entry
        run = json.loads(report.read_text())
        run["process_wall_s"] = measured["wall_s"]
        run["process_peak_rss_mb"] = measured["peak_rss_mb"]
        run["process_cpu_s"] = measured["cpu_s"]
        run["cpu_stall_frac"] = measured["cpu_stall_frac"]
        run["waited_for_quiet_s"] = measured["waited_for_quiet_s"]
        runs.append(run)
        print(f"  nudge-ft {variant} run {i}: {run['fit_s']:.2f} s", flush=True)
    entry.update(runs[-1])
    entry["runs"] = runs
    entry["fit_s"] = min(r["fit_s"] for r in runs)
    entry["median_fit_s"] = statistics.median(r["fit_s"] for r in runs)
    if all("fit_cpu_s" in r for r in runs):
        entry["fit_cpu_s"] = min(r["fit_cpu_s"] for r in runs)
    entry["peak_rss_fit_mb"] = max(r["peak_rss_fit_mb"] for r in runs)
    entry["process_peak_rss_mb"] = max(r["process_peak_rss_mb"] for r in runs)
    entry.update(evaluate(dataset, emb))
    if not keep:
        emb.unlink()
    return entry


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The brief's targets that apply to this dataset and method, met or not."""
    info, kit = result["dataset"], result["nudgekit"]
    n = info["n_records"]
    found: list[dict[str, Any]] = []
    if result["method"] == "nudge-n" and 50_000 <= n < 500_000:
        for variant, floor in (("default", 50.0), ("nontrain", 10.0)):
            ratio = result["ratios"].get(f"nudgeft_{variant}_over_nudgekit")
            found.append(
                {
                    "target": f"nudgekit NUDGE-N ≥ {floor:g}× faster than nudge-ft {variant}",
                    "value": ratio,
                    "threshold": floor,
                    "met": None if ratio is None else ratio >= floor,
                }
            )
    if n >= 500_000:
        ratio = result["ratios"].get("nudgekit_over_faiss_search")
        found.append(
            {
                "target": "nudgekit total fit time ≤ 1.5 × one exact FAISS IndexFlatIP search",
                "value": ratio,
                "threshold": 1.5,
                "met": None if ratio is None else ratio <= 1.5,
            }
        )
        limit = info["input_bytes"] / MB + 2 * 1024
        found.append(
            {
                "target": "nudgekit peak RSS ≤ input size + 2 GB (MB)",
                "value": kit["peak_rss_mb"],
                "threshold": limit,
                "met": kit["peak_rss_mb"] <= limit,
            }
        )
    return found


def save(result: dict[str, Any], path: Path) -> None:
    """Write the result so far (ratios and targets recomputed), so a crash loses little."""
    result["targets"] = targets(result)
    path.write_text(json.dumps(result, indent=1) + "\n")


def markdown(result: dict[str, Any]) -> str:
    """The result as a short markdown table (times: best of the runs; RSS: peaks)."""
    kit, raw = result["nudgekit"], result["raw"]
    stalls = [
        r["cpu_stall_frac"]
        for r in [
            *kit["runs"],
            *[r for ft in result["nudge_ft"].values() for r in ft.get("runs", [])],
        ]
        if r.get("cpu_stall_frac") is not None
    ]
    lines = [
        f"**{result['name']}**, {result['method']}, {result['threads']} threads: "
        f"N = {result['dataset']['n_records']:,}, d = {result['dataset']['dim']}, "
        f"splits {result['dataset']['splits']}; times are best of "
        f"{len(kit['runs'])} (nudgekit) / "
        f"{max([len(ft.get('runs', [])) for ft in result['nudge_ft'].values()] or [0])} (nudge-ft)"
        + (f"; CPU stall share up to {max(stalls):.0%}" if stalls else ""),
        "",
        "| run | time (s) | peak RSS (MB) | γ | abs Δγ | test NDCG@10 | test recall@10 | "
        "ratio: nudge-ft time / nudgekit time | same, vs nudgekit in-process fit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| no fine-tuning | | | | | {raw['ndcg@10']:.4f} | {raw['recall@10']:.4f} | | |",
        f"| nudgekit fit, whole process (in-process {kit['fit_total_s']:.2f} s) | "
        f"{kit['wall_s']:.2f} | {kit['peak_rss_mb']:.0f} | {kit['gamma']:.4g} | | "
        f"{kit['ndcg@10']:.4f} | {kit['recall@10']:.4f} | 1 | 1 |",
    ]
    for variant, ft in result["nudge_ft"].items():
        env = " ".join(f"{k}={v}" for k, v in ft.get("extra_env", {}).items())
        label = f"nudge-ft {variant} (fit call{', ' + env if env else ''})"
        if "skipped" in ft or "failed" in ft:
            lines.append(f"| {label} | {ft.get('skipped') or ft['failed']} | | | | | | | |")
            continue
        ratio = result["ratios"][f"nudgeft_{variant}_over_nudgekit"]
        inproc = result["ratios"][f"nudgeft_{variant}_over_nudgekit_fit_total"]
        lines.append(
            f"| {label} | {ft['fit_s']:.2f} | {ft['peak_rss_fit_mb']:.0f} | {ft['gamma']:.4g} | "
            f"{ft['abs_delta_gamma']:.2g} | {ft['ndcg@10']:.4f} | {ft['recall@10']:.4f} | "
            f"{ratio:.1f}× | {inproc:.1f}× |"
        )
    faiss = result.get("faiss")
    if faiss:
        lines.append(
            f"| FAISS IndexFlatIP search, {faiss['n_queries']:,} val queries, k = 1 | "
            f"{faiss['search_s']:.2f} | {faiss['peak_rss_mb']:.0f} | | | | | "
            f"nudgekit / FAISS = {result['ratios']['nudgekit_over_faiss_search']:.2f} | "
            f"{result['ratios']['nudgekit_fit_total_over_faiss_search']:.2f} |"
        )
    if result["targets"]:
        lines.append("")
    for t in result["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.2f}"
        verdict = {True: "met", False: "MISSED", None: "not measured"}[t["met"]]
        lines.append(
            f"- target: {t['target']}: {value} (threshold {t['threshold']:.4g}) → {verdict}"
        )
    return "\n".join(lines)


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--method", choices=["nudge-n", "nudge-m"], required=True)
    parser.add_argument("--name", default=None, help="dataset name (default: directory name)")
    parser.add_argument("--variants", default="default,nontrain", help="nudge-ft variants")
    parser.add_argument("--repeat", type=int, default=3, help="nudgekit (and FAISS) runs")
    parser.add_argument("--repeat-ft", type=int, default=1, help="runs of each nudge-ft variant")
    parser.add_argument("--threads", type=int, default=2, help="BLAS/OpenMP/torch/FAISS threads")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="max seconds to wait for CPU pressure < 10%% before each measured run",
    )
    parser.add_argument(
        "--max-rss-gb",
        type=float,
        default=None,
        help="kill a child process whose RSS exceeds this (default: 90%% of available RAM)",
    )
    parser.add_argument(
        "--ft-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the nudge-ft worker only (e.g. MALLOC_ARENA_MAX=1)",
    )
    parser.add_argument("--tag", default="", help="suffix of the results file name")
    parser.add_argument(
        "--faiss", choices=["auto", "yes", "no"], default="auto", help="auto: ≥ 500k records"
    )
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--work", type=Path, default=BENCH_DIR / "out" / "work")
    parser.add_argument("--keep", action="store_true", help="keep the output embeddings")
    args = parser.parse_args()

    import psutil

    global QUIET_WAIT_S, MAX_RSS_BYTES
    QUIET_WAIT_S = args.quiet_wait
    available = psutil.virtual_memory().available
    MAX_RSS_BYTES = args.max_rss_gb * GB if args.max_rss_gb else 0.9 * available
    dataset: Path = args.dataset
    name = args.name or dataset.resolve().name
    work = args.work / f"{name}-{args.method}{args.tag}"
    work.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"{name}-{args.method}{args.tag}.json"
    info = dataset_info(dataset)
    with_faiss = args.faiss == "yes" or (args.faiss == "auto" and info["n_records"] >= 500_000)
    result: dict[str, Any] = {
        "name": name,
        "method": args.method,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "load_avg_start": os.getloadavg(),
        "dataset": info,
        "threads": args.threads,
        "max_rss_gb": round(MAX_RSS_BYTES / GB, 1),
        "complete": False,
    }
    result["page_cache_warm_s"] = warm_page_cache(dataset)
    print(f"[{name} {args.method}] warm page cache done", flush=True)

    kit_runs: list[dict[str, Any]] = []
    faiss_runs: list[dict[str, Any]] = []
    for i in range(args.repeat):
        kit_runs.append(run_nudgekit(dataset, args.method, work, str(i), args.threads))
        print(f"  nudgekit run {i}: {kit_runs[-1]['wall_s']:.2f} s", flush=True)
        if with_faiss:
            faiss_runs.append(run_faiss(dataset, work, str(i), args.threads))
            print(f"  faiss run {i}: {faiss_runs[-1]['search_s']:.2f} s", flush=True)
    best_wall = min(r["wall_s"] for r in kit_runs)
    median_wall = statistics.median(r["wall_s"] for r in kit_runs)
    kit = {
        "command": f"nudgekit fit {dataset} --method {args.method} --out TMP --quiet",
        "runs": kit_runs,
        "wall_s": best_wall,
        "median_wall_s": median_wall,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in kit_runs),
        "gamma": kit_runs[-1]["gamma"],
        "n_changed": kit_runs[-1]["n_changed"],
        "validation_accuracy": kit_runs[-1]["validation_accuracy"],
        "fit_total_s": min(r["timings_s"]["total"] for r in kit_runs),
        "cpu_s": min(r["cpu_s"] for r in kit_runs),
    }
    kit.update(evaluate(dataset, work / "nudgekit" / "embeddings.npy"))
    result["nudgekit"] = kit
    result["raw"] = evaluate(dataset)
    print("  evaluated nudgekit and raw corpus", flush=True)

    ratios: dict[str, float] = {}
    result["ratios"] = ratios
    result["nudge_ft"] = {}
    if faiss_runs:
        search = min(r["search_s"] for r in faiss_runs)
        median_search = statistics.median(r["search_s"] for r in faiss_runs)
        result["faiss"] = {
            **faiss_runs[-1],
            "search_s": search,
            "median_search_s": median_search,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in faiss_runs),
            "runs": faiss_runs,
        }
        ratios["nudgekit_over_faiss_search"] = best_wall / search
        ratios["nudgekit_over_faiss_search_medians"] = median_wall / median_search
        ratios["nudgekit_fit_total_over_faiss_search"] = kit["fit_total_s"] / search
        ratios["nudgekit_over_faiss_search_cpu"] = kit["cpu_s"] / min(
            r["search_cpu_s"] for r in faiss_runs
        )
    save(result, path)

    for variant in [v for v in args.variants.split(",") if v]:
        ft = run_nudgeft(
            dataset,
            args.method,
            variant,
            work,
            info,
            threads=args.threads,
            repeat=args.repeat_ft,
            keep=args.keep,
            extra_env=dict(item.split("=", 1) for item in args.ft_env),
        )
        result["nudge_ft"][variant] = ft
        if "skipped" in ft or "failed" in ft:
            print(f"  nudge-ft {variant}: {ft.get('skipped') or ft['failed']}", flush=True)
            save(result, path)
            continue
        print(f"  nudge-ft {variant}: {ft['fit_s']:.2f} s", flush=True)
        ft["abs_delta_gamma"] = abs(ft["gamma"] - kit["gamma"])
        ratios[f"nudgeft_{variant}_over_nudgekit"] = ft["fit_s"] / best_wall
        ratios[f"nudgeft_{variant}_over_nudgekit_medians"] = ft["median_fit_s"] / median_wall
        if "fit_cpu_s" in ft:  # CPU seconds: less sensitive to other jobs than wall time
            ratios[f"nudgeft_{variant}_over_nudgekit_cpu"] = ft["fit_cpu_s"] / kit["cpu_s"]
        ratios[f"nudgeft_{variant}_over_nudgekit_fit_total"] = ft["fit_s"] / kit["fit_total_s"]
        save(result, path)
    result["load_avg_end"] = os.getloadavg()
    result["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["complete"] = True
    save(result, path)
    if not args.keep:
        shutil.rmtree(work / "nudgekit", ignore_errors=True)
    print(markdown(result))
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
