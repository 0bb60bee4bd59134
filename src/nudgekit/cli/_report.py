"""Report command: an HTML page about one fit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nudgekit.cli import _app
from nudgekit.cli._app import DATASET, ERRORS, Quiet, app, fail, progress_bar


@app.command(rich_help_panel=DATASET)
def report(
    run_dir: Annotated[
        Path,
        typer.Argument(
            metavar="RUN", help="A `nudgekit fit` output directory (fit.json, embeddings.npy)."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write report.html and the figures (default: RUN)."),
    ] = None,
    dataset_dir: Annotated[
        Path | None,
        typer.Option("--dataset", help="Embedded dataset (default: the path in fit.json)."),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Write report.html: validation curve, test metrics before/after, records moved."""
    from nudgekit.workflows.report import write_report

    try:
        with progress_bar(quiet) as progress:
            page = write_report(run_dir, out, dataset_dir, progress=progress)
    except ERRORS as error:
        fail(error)
    if not quiet:
        _app.err.print(f"report → {page}", highlight=False, markup=False, soft_wrap=True)
