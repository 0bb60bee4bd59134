"""The typer app and what every command shares: consoles, progress bars, error exits."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

app = typer.Typer(
    name="nudgekit",
    help="Fine-tune embeddings for k-NN retrieval without touching the model (NUDGE).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()


def _version(value: bool) -> None:
    if value:
        from nudgekit import __version__

        out.print(f"nudgekit {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Fine-tune embeddings for k-NN retrieval without touching the model (NUDGE)."""


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]

#: ``nudgekit fit --engine``: where the corpus pass runs.
EngineOption = Annotated[
    str,
    typer.Option(
        "--engine",
        help="local (this process) or ray (a Ray Data job); ray needs a Parquet corpus.",
    ),
]
#: ``nudgekit fit --ray-address``: the Ray cluster to join.
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Ray cluster to join (auto, ray://HEAD:10001, HOST:6379); default: RAY_ADDRESS "
        "or a local Ray instance.",
    ),
]


#: labels from texts, for ``apply`` and ``fit`` (``nudgekit labels`` has them all)
QueriesOption = Annotated[
    Path | None,
    typer.Option(
        "--queries",
        help="Instead of --labels: query texts and what answers them, as `nudgekit labels` "
        "reads them (BEIR, pairs, clicks, LlamaIndex JSON); needs --model.",
    ),
]
QrelsOption = Annotated[
    Path | None, typer.Option("--qrels", help="With --queries: BEIR qrels TSV file or folder.")
]
ModelOption = Annotated[
    str | None,
    typer.Option("--model", help="With --queries: the model the documents were embedded with."),
]


ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        help="NAME=VALUE, a parameter of the method (repeatable; VALUE is JSON or a string), "
        "e.g. --param cv=val (nudge-cv's cheaper mode), --method nudge-m --param "
        "criterion=ndcg. Each method's parameters: its Python class.",
    ),
]


def parse_value(text: str) -> Any:
    """A --param value: JSON where it parses (numbers, lists, true), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def method_params(items: list[str] | None) -> dict[str, Any]:
    """``["cv=val", "folds=10"]`` as ``{"cv": "val", "folds": 10}``."""
    params: dict[str, Any] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        if not (sep and name.strip()):
            raise ValueError(f"--param {item!r}: expected NAME=VALUE")
        params[name.strip()] = parse_value(text)
    return params


#: help panels, in the order ``nudgekit --help`` lists them: the main job first
START = "Start here"
STORE = "Your vector store"
LABELS = "Your labels and data"
DATASET = "Datasets on disk"
RESEARCH = "Experiments and scale"

#: --method of fit, apply and quickstart (the NUDGE methods of the registry).
METHOD_HELP = (
    "nudge-cv (the default: NUDGE-N or shrink chosen by cross-validation, refitted on "
    "train+val), nudge-n or nudge-m as in the paper (nudge-m: search by dot product); also "
    "nudge-mn, nudge-s, nudge-im, nudge-in, nudge-n-clustered (`nudgekit bench --list`)."
)


@contextmanager
def progress_bar(quiet: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar on a terminal; nothing when piped or with --quiet."""
    if quiet or not err.is_terminal:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        yield update


#: what a command reports as one line and exit code 2: bad input, a missing or unwritable
#: file (any OS error: permissions, disk full, a path under a file), a missing extra
ERRORS = (ValueError, OSError, ImportError)


def pass_summary(info: dict[str, Any]) -> str | None:
    """One line on an approximate pass (fit.json's / the apply record's ``pass``)."""
    if "recall_top1" not in info:
        return None
    source = info.get("index") or "a FAISS index built in memory"
    if info.get("index_type"):
        source = f"{info['index_type']} {source}"
    lists = f", {info['nprobe']} of {info['nlist']} lists" if info.get("nlist") else ""
    used = "the exact pass was used" if info.get("fell_back") else "approximate pass kept"
    return (
        f"pass: through {source}{lists}; the exact best fixed score found for "
        f"{info['recall_top1']:.1%} of {info['n_sample']} sampled queries — {used}"
    )


def fail(error: Exception) -> NoReturn:
    # the message is plain text: paths and JSON shapes may hold [brackets]
    err.print(Text.assemble(("error: ", "bold red"), message(error)), soft_wrap=True)
    raise typer.Exit(code=2)


def message(error: Exception) -> str:
    """One line for ``error``; an OS error names its path and what the system said."""
    if isinstance(error, OSError) and error.strerror:
        if error.filename is not None:
            return f"{error.filename}: {error.strerror}"
        return error.strerror
    return " ".join(str(error).split("\n"))


def labels_source(
    labels: Path | None, queries: Path | None, qrels: Path | None, model: str | None
) -> None:
    """Check that exactly one kind of labels was given; raise a clear error otherwise."""
    if queries is None and labels is None:
        raise ValueError("give the labels: --labels DIR, or --queries FILE with --model MODEL")
    if queries is not None and labels is not None:
        raise ValueError("--labels and --queries both given: use one")
    if queries is not None and model is None:
        raise ValueError("--queries needs --model: the model the documents were embedded with")
    if queries is None and (qrels is not None or model is not None):
        raise ValueError("--qrels and --model go with --queries")
