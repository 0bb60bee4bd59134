"""Test quality of the default against NUDGE as in the paper, with paired standard errors.

    python bench/accuracy.py DATASET_DIR [DATASET_DIR ...] [--out bench/results]

For each embedded dataset: fit every rule below on its train/val splits, search the test
queries exactly, and report NDCG@10 and recall@10 with the paired standard error of the
difference to nudge-ft's NUDGE-N over test queries (nudgekit's ``nudge-n`` reproduces
nudge-ft 0.1.2 exactly: tests/test_parity_nudge_ft.py). Test queries are used once, for the
table; every choice is made on train and val. Writes ``accuracy-<name>.json`` per dataset
and prints a markdown table.

Rules: ``none``; ``nudge-ft N`` / ``nudge-ft M`` (NudgeN(), NudgeM()); the default
(``nudge-cv``: NUDGE-N or shrink by 5-fold CV over train+val, refit on all); its parts —
``refit alone`` (nudge-ft's γ choice, then the refit: ``NudgeCV(cv="none")``) and ``CV
alone`` (the CV choice, fitted on train only: ``NudgeCV(refit=False)``); the cheaper
mode ``NudgeCV(cv="val")``; and NUDGE-M's NDCG option (``NudgeM(criterion="ndcg")``, not
unit-norm: for stores searched by dot product).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from nudgekit import NudgeM, NudgeN
from nudgekit.core import NudgeCV, Relevance
from nudgekit.evaluation import search
from nudgekit.io.dataset import load_dataset
from nudgekit.workflows.provenance import versions

RULES = {
    "none": None,
    "nudge-ft N": lambda: NudgeN(),
    "nudge-ft M": lambda: NudgeM(),
    "NUDGE-M, γ by val NDCG": lambda: NudgeM(criterion="ndcg"),
    "refit alone": lambda: NudgeCV(cv="none"),
    "CV alone": lambda: NudgeCV(refit=False),
    "default (nudge-cv)": lambda: NudgeCV(),
    "cheaper mode (cv=val)": lambda: NudgeCV(cv="val"),
}


def per_query(indices: np.ndarray, relevance: Relevance, k: int = 10) -> dict[str, np.ndarray]:
    """NDCG@k and recall@k of each query (the definitions of ``nudgekit eval``)."""
    n, width = relevance.n_queries, relevance.n_records
    query = relevance.query_of_entry()
    keys = query * width + relevance.indices  # sorted: CSR order
    wanted = np.arange(n)[:, None] * width + indices[:, :k]
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    gains = np.where(keys[at] == wanted, relevance.grades[at], 0.0)
    dcg = (gains / np.log2(np.arange(2, k + 2))).sum(axis=1)
    order = np.lexsort((-relevance.grades, query))
    rank = np.arange(len(order)) - relevance.indptr[query[order]]
    take = rank < k
    idcg = np.bincount(
        query[order][take],
        weights=relevance.grades[order][take] / np.log2(rank[take] + 2),
        minlength=n,
    )
    return {"ndcg@10": dcg / idcg, "recall@10": (gains > 0).sum(axis=1) / relevance.counts()}


def run(path: Path) -> dict:
    data = load_dataset(path)
    train, val, test = data.split("train"), data.split("val"), data.split("test")
    rows = {}
    for name, make in RULES.items():
        tick = time.perf_counter()
        if make is None:
            corpus, chosen = np.asarray(data.corpus, dtype=np.float32), "–"
        else:
            model = make().fit(
                data.corpus, train.queries, train.relevance, val.queries, val.relevance
            )
            corpus = model.transform(data.corpus)
            family = getattr(
                model, "family_", "nudge-n" if isinstance(model, NudgeN) else "nudge-m"
            )
            symbol = "κ" if family == "shrink" else "γ"
            chosen = f"{family} {symbol}={model.gamma_:.4g}"
        seconds = time.perf_counter() - tick
        _, indices = search(test.queries, corpus, 10)
        rows[name] = {"chosen": chosen, "fit_s": seconds, **per_query(indices, test.relevance)}
    base = rows["nudge-ft N"]
    out = {
        "dataset": str(path.resolve()),
        "n_test": len(test.query_ids),
        "versions": versions(),
        "rules": {},
    }
    for name, row in rows.items():
        entry = {"chosen": row["chosen"], "fit_s": round(row["fit_s"], 3)}
        for metric in ("ndcg@10", "recall@10"):
            diff = row[metric] - base[metric]
            entry[metric] = float(row[metric].mean())
            entry[f"{metric} Δ"] = float(diff.mean())
            entry[f"{metric} Δ se"] = float(diff.std(ddof=1) / np.sqrt(len(diff)))
        out["rules"][name] = entry
    return out


def table(results: list[dict]) -> str:
    lines = []
    for result in results:
        name = dataset_name(Path(result["dataset"]))
        lines += [
            f"**{name}** ({result['n_test']:,} test queries)",
            "",
            "| rule | chosen | NDCG@10 | Δ vs nudge-ft N (± SE) | recall@10 | Δ (± SE) |",
            "|---|---|---|---|---|---|",
        ]
        for rule, e in result["rules"].items():
            lines.append(
                f"| {rule} | {e['chosen']} | {e['ndcg@10']:.4f} | "
                f"{100 * e['ndcg@10 Δ']:+.2f} ± {100 * e['ndcg@10 Δ se']:.2f} | "
                f"{e['recall@10']:.4f} | "
                f"{100 * e['recall@10 Δ']:+.2f} ± {100 * e['recall@10 Δ se']:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def dataset_name(path: Path) -> str:
    """``scifact`` for ``.../scifact/minilm`` (a model folder names its parent's data)."""
    return path.parent.name if path.name == "minilm" else path.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    results = []
    for path in args.datasets:
        result = run(path)
        name = dataset_name(path)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"accuracy-{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        results.append(result)
        print(table([result]), flush=True)


if __name__ == "__main__":
    main()
