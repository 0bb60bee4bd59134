"""The quickstart command: the product loop on the bundled sample, in a local folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nudgekit.cli._app import ERRORS, METHOD_HELP, START, Quiet, app, fail, out, progress_bar

METRICS = ("ndcg@10", "recall@10", "mrr@10", "accuracy@1")


@app.command(rich_help_panel=START)
def quickstart(
    directory: Annotated[
        Path, typer.Option("--dir", help="Folder for the store, labels, run and report.")
    ] = Path("nudgekit-quickstart"),
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "nudge-cv",
    quiet: Quiet = False,
) -> None:
    """Sample → LanceDB store → NUDGE applied in place → before/after → report."""
    from nudgekit.workflows.quickstart import run_quickstart

    try:
        with progress_bar(quiet) as progress:
            result = run_quickstart(directory, method=method, progress=progress)
    except ERRORS as error:
        fail(error)
    record = result["apply"]
    out.print(
        f"Wrote the bundled sample ({record['n_records']:,} documents) into "
        f"{result['store']} (table {result['table']!r}) and applied {record['method']}: "
        f"γ = {record['gamma']:.4g}, {record['n_changed']:,} rows rewritten, originals kept.",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    table = Table(title=f"held-out test queries ({record['test_before']['n_queries']})")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for name in METRICS:
        before, after = record["test_before"][name], record["test_after"][name]
        table.add_row(name, f"{before:.4f}", f"{after:.4f}")
    out.print(table)
    for example in result["examples"]:
        out.print(f"\nquery: {example['query']}", highlight=False, markup=False, soft_wrap=True)
        for when in ("before", "after"):
            shown = "; ".join(
                ("✓ " if hit["relevant"] else "  ") + hit["title"] for hit in example[when]
            )
            out.print(f"  {when:>6}: {shown}", highlight=False, markup=False, soft_wrap=True)
    if result["report"]:
        out.print(f"\nreport: {result['report']}", highlight=False, markup=False, soft_wrap=True)
    spec = result["store"]
    out.print(
        f"undo with: nudgekit rollback --store {spec} --table {result['table']}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
