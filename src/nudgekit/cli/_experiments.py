"""Experiment commands: bench."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nudgekit.cli import _app
from nudgekit.cli._app import Quiet, app, fail, out

DEFAULT_METHODS = "none,nudge-m,nudge-n"


@app.command()
def bench(
    dataset_dir: Annotated[Path, typer.Argument(help="Embedded dataset directory.")],
    methods: Annotated[
        str, typer.Option(help="Comma-separated method names (see --list).")
    ] = DEFAULT_METHODS,
    ood: Annotated[
        bool, typer.Option("--ood", help="Out-of-distribution split (k-means on train queries).")
    ] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Write bench.json and bench.md here.")
    ] = None,
    beir: Annotated[
        Path | None, typer.Option(help="BEIR directory of the texts (for ptft).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Embedding model (for ptft).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu (default), torch, cuda ...")] = None,
    list_methods: Annotated[
        bool, typer.Option("--list", help="List the available methods and exit.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Fit several methods on the same splits and compare them on the test split."""
    from nudgekit.dataset import write_json
    from nudgekit.experiments import bench_markdown, run_bench
    from nudgekit.methods import REGISTRY

    if list_methods:
        for name in sorted(REGISTRY):
            out.print(name, highlight=False)
        return
    names = [m.strip() for m in methods.split(",") if m.strip()]

    def report(name: str, row: dict[str, Any]) -> None:
        if quiet:
            return
        if row["status"] == "ok":
            _app.err.print(f"{name}: done in {row['fit_s']:.2f} s", highlight=False, markup=False)
        else:
            _app.err.print(f"{name}: failed ({row['error']})", highlight=False, markup=False)

    try:
        if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"--out {out_dir} exists and is not a directory")
        result = run_bench(
            dataset_dir,
            names,
            ood=ood,
            beir_dir=beir,
            model=model,
            device=device,
            on_method=report,
        )
    except (ValueError, FileNotFoundError) as error:
        fail(error)
    table = bench_markdown(result)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "bench.json", result)
        (out_dir / "bench.md").write_text(table)
    out.print(table, highlight=False, markup=False, soft_wrap=True)
    if any(row["status"] != "ok" for row in result["methods"]):
        raise typer.Exit(code=1)
