"""Core commands: fit, eval, demo."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nudgekit.cli import _app
from nudgekit.cli._app import (
    DATASET,
    ERRORS,
    METHOD_HELP,
    START,
    EngineOption,
    ModelOption,
    ParamOption,
    QrelsOption,
    QueriesOption,
    Quiet,
    RayAddressOption,
    app,
    fail,
    labels_source,
    method_params,
    out,
    progress_bar,
)


@app.command(rich_help_panel=DATASET)
def fit(
    dataset_dir: Annotated[Path, typer.Argument(help="Embedded dataset directory.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write embeddings.npy and fit.json.")],
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "nudge-cv",
    gamma: Annotated[
        float | None, typer.Option(help="Fixed step size γ (skips the validation search).")
    ] = None,
    val_k: Annotated[int, typer.Option(help="NUDGE-N: pick γ by top-k validation accuracy.")] = 1,
    param: ParamOption = None,
    device: Annotated[
        str | None, typer.Option(help="cpu (numpy, default), torch, cuda, cuda:N ...")
    ] = None,
    engine: EngineOption = "local",
    ray_address: RayAddressOption = None,
    labels: Annotated[
        Path | None,
        typer.Option("--labels", help="Take queries, qrels and splits from this labels folder."),
    ] = None,
    queries: QueriesOption = None,
    qrels: QrelsOption = None,
    model: ModelOption = None,
    corpus_pass: Annotated[
        str,
        typer.Option(
            "--pass",
            help="exact (default): score every record; ann: each validation query's "
            "competitors from a FAISS index, recall checked on a sample (docs/scale.md).",
        ),
    ] = "exact",
    index: Annotated[
        Path | None,
        typer.Option(
            help="--pass ann: a FAISS index file over the corpus rows; built (IVF) and "
            "saved here when missing."
        ),
    ] = None,
    nprobe: Annotated[int, typer.Option(help="--pass ann: IVF lists searched per query.")] = 32,
    min_recall: Annotated[
        float,
        typer.Option(help="--pass ann: below this sampled recall of the exact top-1, use exact."),
    ] = 0.9,
    quiet: Quiet = False,
) -> None:
    """Fit NUDGE on the train/val splits; write new embeddings and a fit report.

    A dataset whose corpus is a corpus/ folder of Parquet shards gets OUT/changed.parquet
    (only the changed records) in place of embeddings.npy.
    """
    from nudgekit.engines import EngineSettings
    from nudgekit.workflows.fit import fit_dataset

    try:
        if queries is not None or qrels is not None or model is not None:
            labels_source(labels, queries, qrels, model)
        with progress_bar(quiet) as progress:
            report = fit_dataset(
                dataset_dir,
                out,
                labels_dir=labels,
                queries=queries,
                qrels=qrels,
                model=model,
                method=method,
                gamma=gamma,
                val_k=val_k,
                params=method_params(param),
                device=device,
                engine=EngineSettings(
                    engine,
                    ray_address,
                    quiet=quiet,
                    corpus_pass=corpus_pass,
                    index=None if index is None else str(index),
                    nprobe=nprobe,
                    min_recall=min_recall,
                ),
                progress=progress,
            )
    except ERRORS as error:
        fail(error)
    summary = _app.pass_summary(report.get("pass", {}))
    warning = report.get("pass", {}).get("warning")
    if warning:
        _app.err.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    elif summary and not quiet:
        _app.err.print(summary, highlight=False, markup=False, soft_wrap=True)
    if not quiet:
        acc = report["validation_accuracy"]
        _app.err.print(
            f"{report['method']}: γ = {report['gamma']:.6g}, "
            f"{report['n_changed']:,} of {report['n_records']:,} records changed"
            + (f", validation accuracy {acc:.4f}" if acc is not None else "")
            + f", {report['timings_s']['total']:.2f} s → {out}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@app.command("eval", rich_help_panel=DATASET)
def evaluate(
    dataset_dir: Annotated[Path, typer.Argument(help="Embedded dataset directory.")],
    embeddings: Annotated[
        Path | None,
        typer.Option(
            help="N × d .npy to score (default: the raw corpus); on a Parquet dataset, "
            "the changed.parquet of a fit."
        ),
    ] = None,
    split: Annotated[str, typer.Option(help="Which split's queries to evaluate.")] = "test",
    k: Annotated[int, typer.Option(help="Cut-off for ndcg/recall/mrr.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    quiet: Quiet = False,
) -> None:
    """Exact inner-product k-NN retrieval quality on a split (default: test)."""
    from nudgekit.workflows.evaluate import evaluate_dataset

    try:
        with progress_bar(quiet) as progress:
            result = evaluate_dataset(
                dataset_dir, embeddings=embeddings, split=split, k=k, progress=progress
            )
    except ERRORS as error:
        fail(error)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    table = Table(title=f"{split} split, {'raw corpus' if embeddings is None else embeddings}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.4f}")
    out.print(table)


@app.command(rich_help_panel=START)
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the fitted runs.")] = Path(
        "runs/demo"
    ),
    dataset_dir: Annotated[
        Path | None,
        typer.Option("--dataset", help="Embedded dataset (default: the bundled sample)."),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Fit the default, NUDGE-N and NUDGE-M on the bundled sample; compare test metrics."""
    from nudgekit.io.sample import sample_dir
    from nudgekit.workflows.demo import run_demo

    dataset = dataset_dir or sample_dir()
    try:
        with progress_bar(quiet) as progress:
            rows = run_demo(out_dir, dataset_dir=dataset, progress=progress)
    except ERRORS as error:
        fail(error)
    table = Table(title=f"test split of {dataset} ({rows[0]['n_queries']} queries)")
    for name in ("method", "γ", "changed", "fit s", "ndcg@10", "recall@10", "mrr@10", "acc@1"):
        table.add_column(name, justify="left" if name == "method" else "right")
    for row in rows:
        table.add_row(
            row["method"],
            "–" if row["gamma"] is None else f"{row['gamma']:.4g}",
            f"{row['n_changed']:,}",
            f"{row['fit_s']:.2f}" if "fit_s" in row else "–",
            f"{row['ndcg@10']:.4f}",
            f"{row['recall@10']:.4f}",
            f"{row['mrr@10']:.4f}",
            f"{row['accuracy@1']:.4f}",
        )
    out.print(table)
    out.print(f"embeddings and fit reports: {out_dir}/<method>/", highlight=False)
