"""Experiment commands: bench."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nudgekit.cli import _app
from nudgekit.cli._app import ERRORS, RESEARCH, Quiet, app, fail, out, parse_value

DEFAULT_METHODS = "none,nudge-m,nudge-n,nudge-cv"


@app.command(rich_help_panel=RESEARCH)
def bench(
    dataset_dir: Annotated[
        Path | None, typer.Argument(help="Embedded dataset directory (not needed for --list).")
    ] = None,
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
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="METHOD.NAME=VALUE, a method parameter (repeatable; VALUE is JSON or a "
            "string), e.g. --param adaptor.warmup_steps=10000.",
        ),
    ] = None,
    list_methods: Annotated[
        bool, typer.Option("--list", help="List the available methods and exit.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Fit several methods on the same splits and compare them on the test split."""
    from nudgekit.io.atomic import write_json
    from nudgekit.methods import METHODS
    from nudgekit.workflows.bench import bench_markdown, run_bench

    if list_methods:
        for name, spec in METHODS.items():
            out.print(f"{name:20} {spec.summary}", highlight=False, markup=False)
        return
    if dataset_dir is None:
        fail(ValueError("missing DATASET_DIR: the embedded dataset to benchmark on"))
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
            params=parse_params(param or []),
            on_method=report,
        )
    except ERRORS as error:
        fail(error)
    table = bench_markdown(result)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "bench.json", result)
        (out_dir / "bench.md").write_text(table)
    out.print(table, highlight=False, markup=False, soft_wrap=True)
    if any(row["status"] != "ok" for row in result["methods"]):
        raise typer.Exit(code=1)


def parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["adaptor.lr=0.01", ...]`` as ``{"adaptor": {"lr": 0.01}}``; values are JSON or text."""
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, text = item.partition("=")
        method, dot, name = key.partition(".")
        if not (sep and dot and method and name):
            raise ValueError(f"--param {item!r}: expected METHOD.NAME=VALUE")
        value = parse_value(text)
        params.setdefault(method, {})[name] = value
    return params
