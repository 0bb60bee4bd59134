"""Store commands: apply NUDGE to a vector store in place, roll it back, list the history."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from nudgekit.cli._app import (
    ERRORS,
    METHOD_HELP,
    STORE,
    ModelOption,
    ParamOption,
    QrelsOption,
    QueriesOption,
    Quiet,
    app,
    err,
    fail,
    labels_source,
    method_params,
    out,
    pass_summary,
    progress_bar,
)

Store = Annotated[
    str,
    typer.Option(
        "--store",
        help="lancedb:PATH (database dir), qdrant:PATH (local mode), faiss:PATH, "
        "chroma:PATH (persistent dir), postgresql://USER@HOST/DB (pgvector).",
    ),
]
TableName = Annotated[
    str | None,
    typer.Option("--table", help="Table (LanceDB, PostgreSQL) or collection (Qdrant, Chroma)."),
]
IdColumn = Annotated[
    str | None, typer.Option("--id-column", help="LanceDB id column (default: id).")
]
VectorColumn = Annotated[
    str | None,
    typer.Option(
        "--vector-column",
        help="LanceDB vector column (default: vector); Qdrant vector name (default: the only one).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


@app.command(rich_help_panel=STORE)
def apply(
    store: Store,
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="A labels folder: queries.npy, query_ids.json, qrels.json, splits.json "
            "(train, val, test?), as `nudgekit labels` writes it.",
        ),
    ] = None,
    queries: QueriesOption = None,
    qrels: QrelsOption = None,
    model: ModelOption = None,
    table: TableName = None,
    id_column: IdColumn = None,
    vector_column: VectorColumn = None,
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "nudge-cv",
    gamma: Annotated[
        float | None, typer.Option(help="Fixed step size γ (skips the validation search).")
    ] = None,
    val_k: Annotated[int, typer.Option(help="NUDGE-N: pick γ by top-k validation accuracy.")] = 1,
    param: ParamOption = None,
    metric: Annotated[
        str | None,
        typer.Option(help="dot, cosine or l2: how you search a store that cannot tell."),
    ] = None,
    force_metric: Annotated[
        bool, typer.Option("--force-metric", help="Write NUDGE-M output into a cosine/l2 store.")
    ] = False,
    force_model: Annotated[
        bool,
        typer.Option("--force-model", help="Skip the labels-vs-store embedding model check."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Compute and report; write nothing.")
    ] = False,
    reindex: Annotated[
        bool,
        typer.Option(
            "--reindex/--no-reindex",
            help="Bring the store's vector index up to date after the write (LanceDB: "
            "table.optimize()); --no-reindex leaves it to you and says how.",
        ),
    ] = True,
    device: Annotated[
        str | None, typer.Option(help="cpu (numpy, default), torch, cuda, cuda:N ...")
    ] = None,
    corpus_pass: Annotated[
        str,
        typer.Option(
            "--pass",
            help="exact (default): score every record; ann: each validation query's "
            "competitors from the store's own search (its index), recall checked on a "
            "sample (docs/scale.md).",
        ),
    ] = "exact",
    min_recall: Annotated[
        float,
        typer.Option(help="--pass ann: below this sampled recall of the exact top-1, use exact."),
    ] = 0.9,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Fit NUDGE on a store's vectors; write back only the rows that change, atomically."""
    from nudgekit.workflows.apply import apply_to_store

    try:
        labels_source(labels, queries, qrels, model)
        with progress_bar(quiet) as progress:
            report = apply_to_store(
                store,
                labels,
                queries=queries,
                qrels=qrels,
                model=model,
                table=table,
                id_column=id_column,
                vector_column=vector_column,
                method=method,
                gamma=gamma,
                val_k=val_k,
                params=method_params(param),
                metric=metric,
                force_metric=force_metric,
                force_model=force_model,
                device=device,
                dry_run=dry_run,
                reindex=reindex,
                corpus_pass=corpus_pass,
                min_recall=min_recall,
                progress=progress,
            )
    except ERRORS as error:
        fail(error)
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
        return
    for line in _recovered_lines(report["recovered"]):
        _note(line)
    for warning in report["warnings"]:
        _note(f"warning: {warning}")
    summary = pass_summary(report.get("pass", {}))
    if summary and not quiet and not report["pass"].get("warning"):
        _note(summary)
    if not quiet:
        if dry_run:
            done = f"would write {report['n_written']:,} rows"
        elif not report["recorded"]:
            done = "the store already holds this fit: nothing written, nothing recorded"
        else:
            done = (
                f"wrote {report['n_written']:,} rows ({report['n_reverted']:,} back to their "
                f"original, {report['n_new_originals']:,} originals newly kept"
                + (
                    f", {report['n_skipped']:,} changed meanwhile, left alone"
                    if report.get("n_skipped")
                    else ""
                )
                + f"), apply #{report['seq']}"
            )
        _say(
            f"{report['method']}: γ = {report['gamma']:.6g}, {report['n_changed']:,} of "
            f"{report['n_records']:,} records nudged; {done} — {report['store']}"
        )
        if report.get("index"):
            _say(report["index"])
    if report["test_before"] is not None:
        result = Table(title=f"test split ({report['n_test_queries']} queries), store vectors")
        for name in ("metric", "before", "after"):
            result.add_column(name, justify="left" if name == "metric" else "right")
        for key, before in report["test_before"].items():
            if key != "n_queries":
                result.add_row(key, f"{before:.4f}", f"{report['test_after'][key]:.4f}")
        out.print(result)


@app.command(rich_help_panel=STORE)
def rollback(
    store: Store,
    table: TableName = None,
    id_column: IdColumn = None,
    vector_column: VectorColumn = None,
    to_version: Annotated[
        int | None,
        typer.Option(
            "--to-version",
            help="LanceDB: restore this table version exactly instead (discards every "
            "later change, yours included).",
        ),
    ] = None,
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Undo the last apply, row by row: rows it wrote get back what they held before.

    Rows added, deleted or re-embedded since the apply are left as they are.
    """
    from nudgekit.workflows.apply import rollback_store

    try:
        record = rollback_store(
            store,
            table=table,
            id_column=id_column,
            vector_column=vector_column,
            to_version=to_version,
        )
    except ERRORS as error:
        fail(error)
    if as_json:
        sys.stdout.write(json.dumps(record) + "\n")
        return
    for line in _recovered_lines(record["recovered"]):
        _note(line)
    if quiet:
        return
    if record["kind"] == "restore":
        _say(
            f"restored version {record['restored_version']} as version "
            f"{record['version_after']} — {record['store']}"
        )
        return
    left = [
        f"{record[key]:,} {what}"
        for key, what in (("n_changed_since", "re-embedded since"), ("n_deleted_since", "deleted"))
        if record.get(key)
    ]
    _say(
        f"rolled back apply #{record['rolled_back_seq']}: {record['n_restored']:,} rows "
        "restored"
        + (f" ({', '.join(left)}: left as they are)" if left else "")
        + f" — {record['store']}"
    )


@app.command(rich_help_panel=STORE)
def history(
    store: Store,
    table: TableName = None,
    id_column: IdColumn = None,
    vector_column: VectorColumn = None,
    as_json: AsJson = False,
) -> None:
    """List the applies and rollbacks recorded for a store, oldest first."""
    from nudgekit.workflows.apply import store_history

    try:
        records = store_history(
            store, table=table, id_column=id_column, vector_column=vector_column
        )
    except ERRORS as error:
        fail(error)
    if as_json:
        sys.stdout.write(json.dumps(records) + "\n")
        return
    if not records:
        _say(f"no applies recorded for {store}" + (f" table {table}" if table else ""))
        return
    listing = Table(title=f"{store}" + (f" · {table}" if table else ""))
    for name in ("#", "event", "status", "created", "method", "γ", "written", "versions", "model"):
        listing.add_column(name, justify="right" if name in ("#", "γ", "written") else "left")
    for r in records:
        apply_ = r["kind"] == "apply"
        event = {
            "apply": "apply",
            "rollback": f"rollback of #{r.get('rolled_back_seq')}",
            "restore": f"restore of version {r.get('restored_version')}",
        }.get(r["kind"], r["kind"])
        listing.add_row(
            str(r["seq"]),
            event,
            r["status"],
            r["created"][:19].replace("T", " "),
            r.get("method", "") if apply_ else "",
            f"{r['gamma']:.4g}" if apply_ else "",
            f"{r['n_written']:,}" if apply_ else f"{r.get('n_restored', '')}",
            f"{r.get('version_before', '')} → {r.get('version_after', '?')}",
            str(r.get("model") or "") if apply_ else "",
        )
    # piped: no terminal to fit, so never truncate (rich would assume 80 columns)
    (out if out.is_terminal else Console(width=240)).print(listing)


def _recovered_lines(records: list[dict[str, Any]]) -> list[str]:
    return [f"recovered an interrupted {r['kind']} (#{r['seq']}): completed" for r in records]


def _say(text: str) -> None:
    """A result line: on stdout, where a script piping the command expects it."""
    out.print(text, highlight=False, markup=False, soft_wrap=True)


def _note(text: str) -> None:
    """A warning or what recovery did: on stderr."""
    err.print(text, highlight=False, markup=False, soft_wrap=True)
