"""The typer app and what every command shares: consoles, progress bars, error exits."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]

#: --method of fit, apply and quickstart (the NUDGE methods of the registry).
METHOD_HELP = (
    "nudge-n (unit-norm output) or nudge-m (search by dot product); also nudge-mn, "
    "nudge-s, nudge-im, nudge-in, nudge-n-clustered (see `nudgekit bench --list`)."
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


def fail(error: Exception) -> NoReturn:
    # the message is plain text: paths and JSON shapes may hold [brackets]
    err.print(Text.assemble(("error: ", "bold red"), str(error)), soft_wrap=True)
    raise typer.Exit(code=2)
