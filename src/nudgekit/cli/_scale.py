"""Scale-out commands: convert (embedded layout → Parquet shards)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nudgekit.cli import _app
from nudgekit.cli._app import ERRORS, RESEARCH, Quiet, app, fail, progress_bar


@app.command(rich_help_panel=RESEARCH)
def convert(
    dataset_dir: Annotated[
        Path, typer.Argument(help="Embedded dataset directory (corpus.npy layout).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Parquet dataset directory to write.")],
    to: Annotated[str, typer.Option("--to", help="Target corpus format: parquet.")] = "parquet",
    shards: Annotated[int, typer.Option(help="Number of Parquet files to split into.")] = 8,
    row_group_rows: Annotated[
        int, typer.Option(help="Rows per Parquet row group (what a reader holds at once).")
    ] = 16_384,
    quiet: Quiet = False,
) -> None:
    """Write a dataset's corpus as Parquet shards (id, vector); copy the other files."""
    from nudgekit.io.parquet import convert_to_parquet

    if to != "parquet":
        fail(ValueError(f"--to {to}: only parquet is supported"))
    try:
        with progress_bar(quiet) as progress:
            summary = convert_to_parquet(
                dataset_dir, out, shards=shards, row_group_rows=row_group_rows, progress=progress
            )
    except ERRORS as error:
        fail(error)
    if not quiet:
        _app.err.print(
            f"{summary['n_records']:,} records ({summary['dim']} dims) in "
            f"{summary['shards']} shards, {summary['corpus_bytes'] / 2**20:,.1f} MiB, "
            f"{summary['seconds']:.1f} s → {out}/corpus/",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
